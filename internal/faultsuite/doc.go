// Package faultsuite is Troupe's process-based fault suite (issue #12):
// real node processes (command faultnode) in network namespaces of their
// own, joined by a bridge, under a workload of sessions, names, pins and
// a singleton, while the test kills, pauses, starves and cuts them off,
// and then checks what the clients saw.
//
// # Running it
//
// It needs Linux, root (or CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2
// (ip and tc; Debian package iproute2). It is off by default, so that
// `go test ./...` stays quick and needs no root; .ci/run runs the CI
// variant after the tests:
//
//	TROUPE_FAULTS=1 go test -run TestFaultSuite -v ./internal/faultsuite/          # CI variant, about 2 min
//	TROUPE_FAULT_ROUNDS=200 go test -run TestFaultSuite -v -timeout 0 ./internal/faultsuite/
//
// The long run plays that many rounds of randomly chosen scenarios and
// prints a summary (rounds, operations checked, violations by kind, lost
// writes, failover median and p99, node goroutines and heap) as a
// Markdown table for RELIABILITY.md; TROUPE_FAULT_SUMMARY=file writes it
// to a file too. TROUPE_FAULT_LOGS=dir keeps every node's log, at Debug
// level, in dir: the nodes name a session by a short hash of its key.
// TROUPE_FAULT_GOROUTINES=1 prints every node's goroutines, grouped by
// stack, after the last round. With -race the nodes are built with the
// race detector.
// Without root the test skips, and fails under CI=true, as
// internal/netns does.
//
// # The network
//
// The test runs in a network namespace of its own (internal/netns.Run),
// which holds a bridge with 10.213.0.1/24; node i runs in a named
// namespace troupefs-<pid>-<i> at 10.213.0.(11+i), joined by a veth pair.
// No packet reaches the host's network. Named namespaces are removed at
// cleanup, and those of earlier runs whose process is gone at the next
// start. Cuts are tc u32 filters on a node's eth0 that send its packets
// for a peer into a queue of length zero: they drop node-to-node traffic
// in one direction while the test's clients (on the bridge address) still
// reach every node, as a load balancer would during a partition.
//
// # Scenarios and checks
//
// Each round creates fresh sessions, starts the workload (per session one
// client following the route in the session id and falling back along
// it, one sending each request to a random node; binders, pinners and a
// singleton watcher), waits until every session answers, injects one
// fault (kill -9 of a session's primary and restart under the same name;
// SIGSTOP and SIGCONT; a 2|3 partition; a 2|2|1 partition in which no
// side has a majority; a node that receives but cannot send; CPU
// starvation by a SIGSTOP duty cycle), holds it until the cluster has
// reacted plus a short dwell, heals, and waits until the cluster has
// converged and every session answers again. Then it checks:
//
//   - each session's history is linearizable as a register (porcupine);
//     a write that failed or timed out has an unknown outcome and may take
//     effect at any time after its call; failed reads are dropped; a 404
//     is a read of "absent", which no history explains;
//   - a final read after the heal loses no acknowledged write (see
//     LostWrites for the exact rule);
//   - every node's naming tree has the same digest within 30 s of the heal;
//   - exactly one singleton instance runs once the cluster has converged,
//     and a new instance, or pin owner, never carries a token smaller than
//     one seen before it;
//   - the nodes' goroutines and heap do not grow without bound from round
//     to round (per process: a restarted node starts a new series).
//
// Failover time is from the kill -9 to the first successful answer for
// each session whose primary was killed.
package faultsuite
