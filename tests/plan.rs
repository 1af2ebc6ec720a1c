//! `flowgate plan OLD NEW`: what a reload would keep, replace, add, remove.

mod common;
use common::*;

#[test]
fn plan_lists_every_component_with_its_change() {
    let s = Scratch::new();
    let old = s.write(
        "old.yaml",
        "name: shop\nsources:\n  in: {type: stdin}\ntransforms:\n  f: {type: filter, inputs: [in], condition: '.ok'}\nsinks:\n  out: {type: stdout, inputs: [f]}\n  gone: {type: blackhole, inputs: [in]}\n",
    );
    let new = s.write(
        "new.yaml",
        "name: shop\nsources:\n  in: {type: stdin}\ntransforms:\n  f: {type: filter, inputs: [in], condition: '.ok and .n > 1', buffer: {size: 50}}\nsinks:\n  out: {type: stdout, inputs: [f]}\n  audit: {type: file, inputs: [in], path: audit.ndjson}\n",
    );
    let out = run(
        &["plan", old.to_str().unwrap(), new.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(plan.contains("  keep     in (stdin source)\n"), "{plan}");
    assert!(
        plan.contains("  replace  f (filter transform): buffer, condition changed\n"),
        "{plan}"
    );
    assert!(plan.contains("  keep     out (stdout sink)\n"), "{plan}");
    assert!(plan.contains("  add      audit (file sink)\n"), "{plan}");
    assert!(
        plan.contains("  remove   gone (blackhole sink)\n"),
        "{plan}"
    );
    assert!(
        plan.ends_with("2 kept, 1 replaced, 1 added, 1 removed\n"),
        "{plan}"
    );

    let broken = s.write("broken.yaml", "sources:\n  in: {type: stdn}\n");
    let out = run(
        &["plan", old.to_str().unwrap(), broken.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("unknown source type 'stdn' (did you mean 'stdin'?)"));
}
