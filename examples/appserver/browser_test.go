package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/troupe-go/troupe/internal/proctest"
)

// The console in a real browser: Debian's chromium, headless, driven by
// chromedp through the DevTools protocol. .ci/run installs the browser
// when it runs as root; without it the test skips, except under CI=true,
// where a skip would hide a broken setup and it fails instead.

const (
	// chromiumPath is Debian's chromium (apt-get install chromium).
	chromiumPath = "/usr/bin/chromium"
	// browserWidth and browserHeight are the window, and so the width of
	// the screenshot.
	browserWidth, browserHeight = 1280, 900
	// pageTimeout bounds each wait for the page to show something: the
	// page refreshes itself every 2 s, and a killed member is declared
	// failed within a few seconds, slower under the race detector and load.
	pageTimeout = time.Minute
	// screenshotEnv, set to 1, makes TestConsoleInBrowser write its
	// screenshot to docs/console.png too, which the README shows.
	screenshotEnv = "TROUPE_SCREENSHOT"
)

// TestConsoleInBrowser: the manager's console, opened in headless
// Chromium, lists the three members and both workers' offers of
// services/web, with every node's status read; after one worker is killed
// with SIGKILL, the page, which refreshes itself (it is never reloaded),
// drops it from #members and from the offers and lists it in #departed as
// failed. The page throws no exception and reports no failed refresh. A
// screenshot of the page before the kill is saved in the test's temporary
// directory, and to docs/console.png with TROUPE_SCREENSHOT=1.
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example and runs it as processes, and a browser")
	}
	if _, err := exec.LookPath(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no browser under CI=true: %v (.ci/run installs Debian's chromium when it runs as root)", err)
		}
		t.Skipf("no browser: %v (apt-get install chromium to run this test)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c := newCluster(t)
	mgr := c.start(ctx, t, nodeSpec{role: roleManager, name: "manager", ip: "127.0.0.2"})
	w1 := c.start(ctx, t, nodeSpec{role: roleWorker, name: "worker-1", ip: "127.0.0.3", wka: mgr.gossip})
	w2 := c.start(ctx, t, nodeSpec{role: roleWorker, name: "worker-2", ip: "127.0.0.4", wka: mgr.gossip})
	c.waitPeers(ctx, t, 2, mgr, w1, w2)
	// A few sessions, so that the page (and the screenshot) shows some.
	for _, w := range []*proc{w1, w1, w2} {
		newClient(t).counter(t, w, http.MethodPost, "")
	}

	b := newBrowser(ctx, t)
	b.open(mgr.url + "/console/")
	st := b.waitPage("three members, both workers' offers of services/web and every node's status", pageWant{
		Members: []string{mgr.name, w1.name, w2.name}, Offers: []string{w1.name, w2.name}, Reachable: 3,
	})
	roles := map[string]string{mgr.name: roleManager, w1.name: roleWorker, w2.name: roleWorker}
	for _, m := range st.Members {
		if m.Role != roles[m.Name] || m.State != "alive" {
			t.Errorf("member row %+v, want role %s, state alive", m, roles[m.Name])
		}
	}
	for _, of := range st.Offers {
		if want := c.byName(of.Node).url; of.Value != want {
			t.Errorf("offer of %s shows %q, want its URL %q", of.Node, of.Value, want)
		}
	}
	// The rows are not only in the DOM but shown.
	b.waitVisible(chromedp.CSSAll(`table#members tr.member`), chromedp.AtLeast(3))
	b.waitVisible(chromedp.CSSAll(`table#bindings tr.binding[data-name="services/web"] li.offer`), chromedp.AtLeast(2))
	b.screenshot()

	// A mark on the window: still there after the kill, the page was not
	// loaded again, only its #state swapped by its own script.
	mark := make([]byte, 8)
	rand.Read(mark)
	b.evaluate(`window.troupeTestMark = "` + hex.EncodeToString(mark) + `"`)
	before := st.Time

	w2.Kill(t)
	st = b.waitPage(w2.name+" gone from the members and the offers, and shown as failed", pageWant{
		Members: []string{mgr.name, w1.name}, Offers: []string{w1.name}, Failed: []string{w2.name},
	})
	b.waitNotPresent(chromedp.CSS(`table#members tr.member[data-name="` + w2.name + `"]`))
	b.waitNotPresent(chromedp.CSS(`table#bindings li.offer[data-node="` + w2.name + `"]`))
	if st.Mark != hex.EncodeToString(mark) {
		t.Errorf("the page was loaded again (mark %q), want it refreshed by its own script", st.Mark)
	}
	if st.Time == before {
		t.Errorf("main#state still has the time %s of before the kill", before)
	}
	if st.RefreshStatus != "" {
		t.Errorf("#refresh-status says %q", st.RefreshStatus)
	}
	b.checkConsole()
}

// ---- the browser ----

// browser is one tab of a headless Chromium that the test started.
type browser struct {
	t      *testing.T
	ctx    context.Context // the tab's; actions get a deadline of their own
	output proctest.Buffer // the browser's stdout and stderr

	mu      sync.Mutex
	console []chromedp.ConsoleMessage // what the page logged and threw
}

// newBrowser starts Chromium with a window of browserWidth×browserHeight
// and opens a tab. Cleanup closes it, and logs its output and the page's
// console if the test failed.
func newBrowser(ctx context.Context, t *testing.T) *browser {
	t.Helper()
	b := &browser{t: t}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox cannot start
		chromedp.WindowSize(browserWidth, browserHeight),
		chromedp.Flag("no-proxy-server", true), // the nodes are reached directly
		chromedp.CombinedOutput(&b.output),
		// No UserDataDir: the allocator makes the profile a new temporary
		// directory, and after the browser exits kills the helper processes
		// still using it and removes it (it does so only for a directory
		// of its own).
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx)
	b.ctx = tabCtx
	consoleDone := make(chan struct{})
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits until the browser has exited and its profile is removed
		<-consoleDone
		if t.Failed() {
			t.Logf("browser output:\n%s", b.output.String())
			b.mu.Lock()
			for _, m := range b.console {
				t.Logf("page console: %s", m)
			}
			b.mu.Unlock()
		}
	})
	// Start the browser with the tab's context, which has no deadline: the
	// first action's context owns the browser.
	if err := chromedp.Do(tabCtx); err != nil {
		close(consoleDone)
		t.Fatalf("starting %s: %v\n%s", chromiumPath, err, b.output.String())
	}
	messages := chromedp.Console(tabCtx)
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return // the tab is closed
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	return b
}

// do runs steps within timeout, and fails the test if they fail.
func (b *browser) do(what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v\nthe page shows %+v", what, err, b.snapshot())
	}
}

func (b *browser) open(url string) {
	b.t.Helper()
	b.do("opening "+url, pageTimeout, chromedp.Navigate(url))
}

func (b *browser) evaluate(js string) {
	b.t.Helper()
	b.do("evaluating "+js, pageTimeout, chromedp.Evaluate[chromedp.Void](js))
}

// waitVisible waits until the elements that sel selects are visible.
func (b *browser) waitVisible(sel chromedp.CSSAll, opts ...chromedp.QueryOption) {
	b.t.Helper()
	b.do("waiting until "+string(sel)+" is visible", pageTimeout, chromedp.WaitVisible(sel, opts...))
}

// waitNotPresent waits until no element matches sel.
func (b *browser) waitNotPresent(sel chromedp.CSS) {
	b.t.Helper()
	b.do("waiting until no "+string(sel)+" is left", pageTimeout, chromedp.WaitNotPresent(sel))
}

// screenshot saves the whole page as PNG in the test's temporary
// directory, and to docs/console.png when TROUPE_SCREENSHOT=1.
func (b *browser) screenshot() {
	t := b.t
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, pageTimeout)
	defer cancel()
	img, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	if err != nil || cfg.Width != browserWidth || cfg.Height < 100 {
		t.Fatalf("screenshot: %v, %d×%d pixels, want a PNG %d wide", err, cfg.Width, cfg.Height, browserWidth)
	}
	paths := []string{filepath.Join(t.TempDir(), "console.png")}
	if os.Getenv(screenshotEnv) == "1" {
		paths = append(paths, filepath.Join("..", "..", "docs", "console.png"))
	}
	for _, p := range paths {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, img, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot of the console (%d×%d): %s", cfg.Width, cfg.Height, p)
	}
}

// checkConsole fails the test if the page threw an exception.
func (b *browser) checkConsole() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.console {
		if m.IsException() {
			b.t.Errorf("the page threw: %s", m.Text)
		}
	}
}

// ---- what the page shows ----

// pageState is what the console page shows, read from the ids and
// classes that the console type documents.
type pageState struct {
	Members       []pageMember `json:"members"`       // table#members tr.member
	Departed      []pageMember `json:"departed"`      // table#departed tr.departed
	Offers        []pageOffer  `json:"offers"`        // li.offer of tr.binding[data-name="services/web"]
	Reachable     []string     `json:"reachable"`     // tr.node[data-reachable="true"]
	RefreshStatus string       `json:"refreshStatus"` // #refresh-status
	Time          string       `json:"time"`          // main#state's data-time
	Mark          string       `json:"mark"`          // window.troupeTestMark
}

type pageMember struct {
	Name  string `json:"name"`
	Role  string `json:"role"`
	State string `json:"state"`
}

type pageOffer struct {
	Node  string `json:"node"`
	Value string `json:"value"`
}

// pageWant is what waitPage waits for: exactly these members and offers
// of services/web, at least Reachable nodes with a status, and Failed in
// #departed as failed.
type pageWant struct {
	Members   []string `json:"members"`
	Offers    []string `json:"offers"`
	Reachable int      `json:"reachable"`
	Failed    []string `json:"failed"`
}

// readPageJS reads a pageState from the document.
const readPageJS = `function readPage() {
	const all = (root, sel, f) => Array.from(root.querySelectorAll(sel), f);
	const member = tr => ({name: tr.dataset.name, role: tr.dataset.role, state: tr.dataset.state});
	const web = all(document, "table#bindings tr.binding", tr => tr).find(tr => tr.dataset.name === "services/web");
	const state = document.getElementById("state");
	const status = document.getElementById("refresh-status");
	return {
		members: all(document, "table#members tr.member", member),
		departed: all(document, "table#departed tr.departed", member),
		offers: web ? all(web, "li.offer", li => ({node: li.dataset.node, value: (li.querySelector(".value") || {}).textContent || ""})) : [],
		reachable: all(document, 'table#nodes tr.node[data-reachable="true"]', tr => tr.dataset.name),
		refreshStatus: status ? status.textContent : "(no #refresh-status)",
		time: state ? state.dataset.time : "",
		mark: String(window.troupeTestMark || ""),
	};
}`

// waitPageJS is the predicate of waitPage: the page's state once it is
// what want says, or null.
const waitPageJS = `function (want) {
	const page = (` + readPageJS + `)();
	const same = (got, w) => got.length === w.length && w.every(x => got.includes(x));
	const ok = same(page.members.map(m => m.name), want.members) &&
		same(page.offers.map(o => o.node), want.offers) &&
		page.reachable.length >= want.reachable &&
		(want.failed || []).every(n => page.departed.some(d => d.name === n && d.state === "failed"));
	return ok ? page : null;
}`

// waitPage waits until the page shows want, checking on every change of
// the document (the page's own refresh swaps its #state every 2 s), and
// returns what it shows then.
func (b *browser) waitPage(what string, want pageWant) pageState {
	b.t.Helper()
	// The page gives up after pageTimeout, the context a little later in
	// case the browser does not answer at all.
	ctx, cancel := context.WithTimeout(b.ctx, pageTimeout+10*time.Second)
	defer cancel()
	st, err := chromedp.Run(ctx, chromedp.PollFunction[pageState](waitPageJS,
		chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(pageTimeout), chromedp.WithPollingArgs(want)))
	if err != nil {
		if errors.Is(err, chromedp.ErrPollingTimeout) {
			err = errors.New("timed out")
		}
		b.t.Fatalf("waiting until the console page shows %s: %v\nthe page shows %+v", what, err, b.snapshot())
	}
	return st
}

// snapshot reads what the page shows now, for a failure's message.
func (b *browser) snapshot() pageState {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	st, err := chromedp.Run(ctx, chromedp.Evaluate[pageState]("("+readPageJS+")()"))
	if err != nil {
		st.RefreshStatus = "(cannot read the page: " + err.Error() + ")"
	}
	return st
}
