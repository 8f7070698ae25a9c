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
	"strings"
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

// Proc is a program that Start runs.
type Proc struct {
	Name           string
	Cmd            *exec.Cmd
	Stdout, Stderr Buffer
	Exited         chan struct{} // closed once the process has exited
}

// Start runs bin with args, and env as its whole environment (nil: the
// test's own). Cleanup kills it, and logs its stderr if the test failed;
// a data race it reports fails the test.
func Start(t testing.TB, name, bin string, args, env []string) *Proc {
	t.Helper()
	p := &Proc{Name: name, Cmd: exec.Command(bin, args...), Exited: make(chan struct{})}
	p.Cmd.Env = env
	p.Cmd.Stdout, p.Cmd.Stderr = &p.Stdout, &p.Stderr
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.Cmd.Wait()
		close(p.Exited)
	}()
	t.Cleanup(func() {
		p.Kill(t)
		if strings.Contains(p.Stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("%s: data race:\n%s", name, p.Stderr.String())
		} else if t.Failed() {
			t.Logf("%s stderr:\n%s", name, p.Stderr.String())
		}
	})
	return p
}

// FirstLine returns the first line the process wrote to stdout, and false
// while it has written none. It fails the test if the process exited
// first.
func (p *Proc) FirstLine(t testing.TB) (string, bool) {
	t.Helper()
	select {
	case <-p.Exited:
		t.Fatalf("%s exited: %v\n%s", p.Name, p.Cmd.ProcessState, p.Stderr.String())
	default:
	}
	line, _, ok := strings.Cut(p.Stdout.String(), "\n")
	return line, ok
}

// Kill kills the process with SIGKILL, if it still runs, and waits until
// it has exited.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	select {
	case <-p.Exited:
		return
	default:
	}
	if err := p.Cmd.Process.Kill(); err != nil {
		t.Errorf("kill %s: %v", p.Name, err)
	}
	<-p.Exited
}
