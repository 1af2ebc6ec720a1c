# Sourced by .ci/run: what tests/install.rs and tests/deb.rs need.
# - man-db and groff-base: `man -l` renders `flowgate man` (tests/install.rs);
# - bash, zsh, fish: the completion scripts are loaded in each shell;
# - cargo-deb (pinned): tests/deb.rs packages the debug binary the tests
#   already built (deploy/debian/build-deb.sh --no-build), so CI pays for
#   no release build; installing cargo-deb from source takes 2.5 minutes of
#   CPU (10 minutes on this 2-core machine under other builds), once per
#   machine.
pkg_need=()
command -v man >/dev/null 2>&1 || pkg_need+=(man-db)
command -v groff >/dev/null 2>&1 || pkg_need+=(groff-base)
command -v zsh >/dev/null 2>&1 || pkg_need+=(zsh)
command -v fish >/dev/null 2>&1 || pkg_need+=(fish)
command -v systemd-sysusers >/dev/null 2>&1 || pkg_need+=(systemd)
command -v strip >/dev/null 2>&1 || pkg_need+=(binutils)
if [ "${#pkg_need[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkg_need[@]}" >/dev/null
fi
cargo_deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qF "$cargo_deb_version"; then
  cargo install --locked cargo-deb --version "$cargo_deb_version"
fi
