package netns

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// EnvChild is the environment variable that marks the child process. Its
// value is the name of the test the child runs; Run in any other test of
// the child fails rather than nesting namespaces.
const EnvChild = "TROUPE_NETNS_TEST"

var (
	// ErrNoPrivilege means the process may not create a network
	// namespace: it lacks root or CAP_SYS_ADMIN (or a seccomp profile
	// forbids it). Run turns it into a skip, or a failure when CI=true.
	ErrNoPrivilege = errors.New("netns: no privilege to create a network namespace (needs root or CAP_SYS_ADMIN)")

	// ErrUnsupported means this system has no network namespaces: not
	// Linux, or a kernel built without them. Run treats it like
	// ErrNoPrivilege.
	ErrUnsupported = errors.New("netns: network namespaces are not supported here (needs Linux with CONFIG_NET_NS)")

	// ErrNotIsolated means the child found interfaces other than lo, so it
	// is not in a fresh namespace and must not send multicast. It happens
	// only if EnvChild is set by hand outside Run.
	ErrNotIsolated = errors.New("netns: not in a fresh network namespace")
)

// Run runs the calling top-level test inside a fresh network namespace.
// In the test process it re-executes the test in a child process, reports
// the child's result on t and returns false; in the child it prepares the
// loopback interface and returns true, and the caller runs the test body.
// See the package documentation for the lifecycle.
func Run(t *testing.T) bool {
	t.Helper()
	name := t.Name()
	if strings.Contains(name, "/") {
		// Subtest names are rewritten (spaces, #01 suffixes) in ways that
		// -test.run cannot always select again, so only top-level tests.
		t.Fatalf("netns: Run must be called from a top-level test, not from subtest %q", name)
		return false
	}

	if child := os.Getenv(EnvChild); child != "" {
		if child != name {
			t.Fatalf("netns: Run called in test %q inside the namespace of test %q", name, child)
			return false
		}
		if err := setupLoopback(); err != nil {
			t.Fatalf("netns: preparing the namespace: %v", err)
			return false
		}
		return true
	}

	out, err := runChild(name, childArgs(t, name))
	out = dropCoverageLine(out)
	if errors.Is(err, ErrNoPrivilege) || errors.Is(err, ErrUnsupported) {
		msg, fail := verdict(err, os.Getenv("CI") == "true")
		if fail {
			t.Fatal(msg)
		} else {
			t.Skip(msg)
		}
		return false
	}
	if err != nil {
		t.Fatalf("netns: %s failed inside its network namespace: %v\n--- child output ---\n%s", name, err, out)
		return false
	}
	switch childResult(name, out) {
	case resultSkip:
		t.Skipf("netns: %s skipped inside its network namespace:\n%s", name, out)
	case resultPass:
		t.Logf("netns: %s passed inside its network namespace:\n%s", name, out)
	default:
		t.Fatalf("netns: %s did not run inside its network namespace:\n%s", name, out)
	}
	return false
}

// verdict turns a namespace creation error into the message for t and
// whether it is a failure (CI=true) rather than a skip.
func verdict(err error, ci bool) (msg string, fail bool) {
	msg = fmt.Sprintf("%v: this test sends multicast and runs only in a network namespace of its own", err)
	if ci {
		return msg + " (CI=true: refusing to skip)", true
	}
	return msg, false
}

type result int

const (
	resultUnknown result = iota
	resultPass
	resultSkip
)

// childResult reads the verdict of the child's test from its -test.v
// output. An exit status of 0 with neither line means the test did not run
// at all (a name the -test.run pattern missed), which must not pass.
func childResult(name, out string) result {
	switch {
	case strings.Contains(out, "--- SKIP: "+name+" "):
		return resultSkip
	case strings.Contains(out, "--- PASS: "+name+" "):
		return resultPass
	}
	return resultUnknown
}

// dropCoverageLine removes the child's "coverage: N% of statements" line:
// go test reads the first such line of the package's output as the
// package's coverage, and the child's covers only one test.
func dropCoverageLine(out string) string {
	lines := strings.SplitAfter(out, "\n")
	kept := lines[:0]
	for _, l := range lines {
		if !strings.HasPrefix(l, "coverage: ") {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "")
}

// childArgs builds the child's command line: this one test, verbose so
// that its verdict can be read, once, with what is left of our deadline,
// and with the coverage directory that go test merges from.
func childArgs(t *testing.T, name string) []string {
	args := []string{
		"-test.run=^" + regexp.QuoteMeta(name) + "$",
		"-test.v",
		"-test.count=1",
	}
	if d, ok := t.Deadline(); ok {
		// Leave the child a margin before our own deadline, so that it
		// times out first and its goroutine dump reaches this test's
		// output instead of both processes dying at once.
		left := time.Until(d)
		left -= min(left/10, 5*time.Second)
		args = append(args, "-test.timeout="+max(left, time.Second).String())
	} else {
		// No deadline here (-test.timeout=0): none in the child either,
		// rather than the 10m that go test would add.
		args = append(args, "-test.timeout=0")
	}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	// A coverage binary writes its counters into -test.gocoverdir, and the
	// parent builds -test.coverprofile from every file in that directory
	// when it exits, so sharing the directory merges the child's coverage.
	// -test.coverprofile itself is not passed: the parent would overwrite
	// the child's file.
	if testing.CoverMode() != "" {
		if f := flag.Lookup("test.gocoverdir"); f != nil && f.Value.String() != "" {
			args = append(args, "-test.gocoverdir="+f.Value.String())
		}
	}
	return args
}

// executable is the test binary to re-execute.
func executable() string {
	if exe, err := os.Executable(); err == nil {
		return exe
	}
	return os.Args[0]
}
