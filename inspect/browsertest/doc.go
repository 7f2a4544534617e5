// Package browsertest drives the inspector's page (package inspect) in a
// real headless Chromium, with github.com/chromedp/chromedp. It is a module
// of its own so that the qcache module does not depend on chromedp; it has
// tests only.
package browsertest
