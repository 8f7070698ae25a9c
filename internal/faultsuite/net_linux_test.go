package faultsuite

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The test's own namespace (made by netns.Run) holds the bridge, with
// bridgeIP; node i lives in a named namespace with nodeIP(i), joined to the
// bridge by a veth pair. Every address is inside namespaces the test made.
const (
	bridgeName = "fsbr0"
	bridgeIP   = "10.213.0.1"
	netPrefix  = "/24"
	nsPrefix   = "troupefs-" // named namespaces: troupefs-<test pid>-<i>
)

func nodeIP(i int) string { return fmt.Sprintf("10.213.0.%d", 11+i) }

// testNet is the bridge and the nodes' namespaces, with the cuts in
// force. A cut is a tc u32 filter on the sending node's eth0 that sends
// IP packets for one destination to a class whose queue holds nothing
// (pfifo limit 0): they are dropped. ARP still passes, and so does the
// test's own traffic (to and from bridgeIP), so that clients can reach
// both sides of a partition, as a load balancer would.
type testNet struct {
	t  *testing.T
	ns []string

	mu      sync.Mutex
	blocked []map[int]bool // blocked[i][j]: i's packets to j are dropped
}

// run runs one command and fails the test with its output on error.
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// newTestNet makes the bridge and n namespaces. Cleanup removes the
// namespaces even if the test fails; the bridge and the host ends of the
// veths go with the test's own namespace.
func newTestNet(t *testing.T, n int) *testNet {
	sweepStaleNamespaces(t)
	tn := &testNet{t: t, blocked: make([]map[int]bool, n)}
	run(t, "ip", "link", "add", bridgeName, "type", "bridge")
	run(t, "ip", "addr", "add", bridgeIP+netPrefix, "dev", bridgeName)
	run(t, "ip", "link", "set", bridgeName, "up")
	for i := range n {
		ns := fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), i)
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("removing namespace %s: %v\n%s", ns, err, out)
			}
		})
		tn.ns = append(tn.ns, ns)
		tn.blocked[i] = map[int]bool{}
		host := fmt.Sprintf("fsv%d", i)
		run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
		run(t, "ip", "link", "set", host, "master", bridgeName, "up")
		run(t, "ip", "-n", ns, "addr", "add", nodeIP(i)+netPrefix, "dev", "eth0")
		run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
		// htb because this kernel has no prio qdisc: class 1:10 passes
		// everything by default, class 1:20 drops what the filters send it.
		run(t, "tc", "-n", ns, "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10", "r2q", "100000")
		run(t, "tc", "-n", ns, "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit")
		run(t, "tc", "-n", ns, "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:20", "htb", "rate", "10gbit")
		run(t, "tc", "-n", ns, "qdisc", "add", "dev", "eth0", "parent", "1:20", "handle", "20:", "pfifo", "limit", "0")
	}
	return tn
}

// sweepStaleNamespaces removes the named namespaces of earlier runs whose
// test process is gone (killed before its cleanup ran). Those of live
// processes, parallel runs, are left alone.
func sweepStaleNamespaces(t *testing.T) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			t.Logf("removing stale namespace %s: %v\n%s", e.Name(), err, out)
		}
	}
}

// apply rewrites node i's filters to drop what blocked[i] says.
func (tn *testNet) apply(i int) {
	ns := tn.ns[i]
	// Deleting the filters of a parent that has none is not an error.
	run(tn.t, "tc", "-n", ns, "filter", "del", "dev", "eth0", "parent", "1:")
	for j := range tn.blocked[i] {
		run(tn.t, "tc", "-n", ns, "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip",
			"prio", "1", "u32", "match", "ip", "dst", nodeIP(j)+"/32", "flowid", "1:20")
	}
}

// Partition cuts every link between nodes of different groups, both
// ways. Nodes in no group keep their links.
func (tn *testNet) Partition(groups ...[]int) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	group := map[int]int{}
	for g, nodes := range groups {
		for _, i := range nodes {
			group[i] = g
		}
	}
	for i := range tn.ns {
		gi, ok := group[i]
		for j := range tn.ns {
			if gj, okj := group[j]; ok && okj && gi != gj {
				tn.blocked[i][j] = true
			}
		}
		tn.apply(i)
	}
}

// MuteSender drops everything node i sends to the other nodes, while it
// still receives theirs: a one-way isolation.
func (tn *testNet) MuteSender(i int) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	for j := range tn.ns {
		if j != i {
			tn.blocked[i][j] = true
		}
	}
	tn.apply(i)
}

// Heal removes every cut.
func (tn *testNet) Heal() {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	for i := range tn.ns {
		if len(tn.blocked[i]) > 0 {
			clear(tn.blocked[i])
			tn.apply(i)
		}
	}
}
