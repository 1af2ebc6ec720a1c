//! A Tansu broker that a test starts and kills itself (`FLOWGATE_TEST_TANSU`,
//! the binary; set by .ci/kafka.sh), and a loopback proxy in front of one
//! that a test can cut and restore while the broker keeps its data.

use crate::common::wait_listening;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn tansu() -> Option<String> {
    match std::env::var("FLOWGATE_TEST_TANSU") {
        Ok(b) => Some(b),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!(
                "CI must provide the Tansu broker binary: set FLOWGATE_TEST_TANSU (.ci/kafka.sh)"
            )
        }
        Err(_) => None,
    }
}

#[macro_export]
macro_rules! tansu_or_skip {
    () => {
        match kafka_common::broker::tansu() {
            Some(b) => b,
            None => {
                eprintln!(
                    "skipped: no Tansu binary (set FLOWGATE_TEST_TANSU; .ci/kafka.sh installs one)"
                );
                return;
            }
        }
    };
}

/// A Tansu broker of this test on `port`, in memory.
pub struct Broker {
    child: Child,
}

impl Broker {
    pub fn start(bin: &str, port: u16) -> Self {
        Self::advertising(bin, port, port)
    }

    /// Listens on `port`, tells clients to connect to `advertised`.
    pub fn advertising(bin: &str, port: u16, advertised: u16) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
            ])
            .arg(format!("tcp://127.0.0.1:{advertised}"))
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tansu");
        wait_listening(port);
        Self { child }
    }

    /// `kill -9`: whatever it held is gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP proxy to the broker: taking it down refuses new
/// connections and cuts the open ones, as a broker that is gone would,
/// while the broker keeps its data (a restarted in-memory Tansu would not,
/// and a consumer's position past the new, shorter log reads nothing).
pub struct Proxy {
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn up(port: u16, target: u16) -> Self {
        // std sets SO_REUSEADDR: the port can be taken again at once.
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("proxy port");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (stop_a, open_a) = (stop.clone(), open.clone());
        let accept = std::thread::spawn(move || {
            while !stop_a.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut open = open_a.lock().unwrap();
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
                open.push(client);
                open.push(server);
            }
        });
        wait_listening(port);
        Self {
            stop,
            open,
            accept: Some(accept),
        }
    }

    pub fn down(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}
