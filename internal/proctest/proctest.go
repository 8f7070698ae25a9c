// Package proctest holds what the tests of the example binaries share to
// run them as real processes: building a binary once (with the race
// detector when the test has it), a buffer the process writes while the
// test reads it, and a wait with a deadline.
//
//	bin := proctest.Build(t, "../proxy")
//	cmd := exec.Command(bin, args...)
//	var out proctest.Buffer
//	cmd.Stdout = &out
//	proctest.WaitFor(ctx, t, "the proxy reports its address", func() bool { return strings.Contains(out.String(), "\n") })
package proctest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Race is true when the test binary runs with the race detector.
var Race bool

var builds struct {
	sync.Mutex
	dir   string
	paths map[string]string
}

// Build compiles the main package in dir (relative to the test's
// package, or absolute) once per test binary, with -race when the test
// has it, and returns the binary's path. It skips the test in -short
// mode: process tests build and start programs. The binaries live in a
// temporary directory that Cleanup removes.
func Build(t testing.TB, dir string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds an example and runs it as processes")
	}
	builds.Lock()
	defer builds.Unlock()
	if p, ok := builds.paths[dir]; ok {
		return p
	}
	if builds.dir == "" {
		d, err := os.MkdirTemp("", "proctest-")
		if err != nil {
			t.Fatal(err)
		}
		builds.dir, builds.paths = d, map[string]string{}
	}
	bin := filepath.Join(builds.dir, fmt.Sprintf("%d-%s", len(builds.paths), filepath.Base(filepath.Clean(dir))))
	args := []string{"build", "-o", bin}
	if Race {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, dir)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", dir, err, out)
	}
	builds.paths[dir] = bin
	return bin
}

// Cleanup removes the binaries Build made; call it from TestMain after
// m.Run.
func Cleanup() {
	builds.Lock()
	defer builds.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
		builds.dir, builds.paths = "", nil
	}
}

// WaitFor polls cond until it holds, and fails the test when ctx ends
// first.
func WaitFor(ctx context.Context, t testing.TB, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting until %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// Buffer is a bytes.Buffer that a process writes while the test reads
// it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
