# Sourced by .ci/run: Debian's headless Chromium for tests/ui_browser.rs,
# which drives it over the DevTools protocol (no WebDriver needed) and
# finds it through FLOWGATE_TEST_CHROMIUM (it fails in CI without one).
# fonts-dejavu-core gives the page's text a font in the screenshots.
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
export FLOWGATE_TEST_CHROMIUM="${FLOWGATE_TEST_CHROMIUM:-$(command -v chromium)}"
