package faultsuite

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Absent is the value a read records when the node answered that the
// session does not exist (404). No write ever writes it, so a register
// that existed can never linearize such a read.
const Absent = -1

// Op is one operation on a session's register ("v") as the client saw it.
// Call and Return are offsets from the start of the suite; an operation
// whose outcome is unknown (a write that failed or timed out: it may
// still have been applied) has Unknown set and, for porcupine, a return
// at the end of time.
type Op struct {
	Client  int
	Session int
	Write   bool
	Value   int64 // the value written, or the value read (Absent for 404)
	Call    time.Duration
	Return  time.Duration
	Unknown bool
	Node    string // the node that answered, or was asked
	Note    string // the error of an unknown write
}

func (o Op) String() string {
	ret := o.Return.Round(time.Millisecond).String()
	if o.Unknown {
		ret = "?"
	}
	kind := "read "
	if o.Write {
		kind = "write"
	}
	s := fmt.Sprintf("[%9s .. %9s] client %2d %s %4d on %s", o.Call.Round(time.Millisecond), ret, o.Client, kind, o.Value, o.Node)
	if o.Note != "" {
		s += " (" + o.Note + ")"
	}
	return s
}

// History collects operations from concurrent clients.
type History struct {
	mu  sync.Mutex
	ops []Op
}

// Add records one operation.
func (h *History) Add(o Op) {
	h.mu.Lock()
	h.ops = append(h.ops, o)
	h.mu.Unlock()
}

// Session returns the operations on one session, by call time.
func (h *History) Session(s int) []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Op
	for _, o := range h.ops {
		if o.Session == s {
			out = append(out, o)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Call < out[j].Call })
	return out
}

// Len is the number of operations recorded.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

type regInput struct {
	write bool
	value int64
}

// registerModel is a single register holding an int64, initially 0 (the
// value Create writes before the session id is known to any client).
var registerModel = porcupine.Model{
	Init: func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regInput)
		if in.write {
			return true, in.value
		}
		return output.(int64) == state.(int64), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		if in.write {
			return fmt.Sprintf("write(%d)", in.value)
		}
		return fmt.Sprintf("read() -> %d", output.(int64))
	},
}

// Linearizable checks one session's operations against the register
// model. Failed reads must not be in ops (they say nothing). An unknown
// write may take effect at any point after its call, which porcupine
// reads as a return at the end of time; a partition round leaves dozens
// of them, each concurrent with everything after it, and the search
// then runs out of time on a hundred operations. Since every write
// writes a value of its own, two rewrites keep the verdict and bound the
// search: see reduceUnknown. The result is porcupine.Unknown when the
// check ran out of time all the same.
func Linearizable(ops []Op, timeout time.Duration) porcupine.CheckResult {
	ops = reduceUnknown(ops) // no unknown operation is left
	hist := make([]porcupine.Operation, 0, len(ops))
	for _, o := range ops {
		ret := int64(o.Return)
		hist = append(hist, porcupine.Operation{
			ClientId: o.Client,
			Input:    regInput{write: o.Write, value: o.Value},
			Call:     int64(o.Call),
			Output:   o.Value,
			Return:   ret,
		})
	}
	return porcupine.CheckOperationsTimeout(registerModel, hist, timeout)
}

// reduceUnknown rewrites the unknown writes of ops, whose write values
// are unique, without changing whether ops is linearizable:
//   - one that no read returned is dropped: in any linearization no read
//     falls between it and the next write, so removing it leaves a valid
//     one, and a linearization without it extends to one with it placed
//     last (its return is unbounded);
//   - one that some read returned took effect before that read's
//     linearization point, so before the earliest such read returned:
//     that becomes its return, and it is no longer concurrent with what
//     came after.
func reduceUnknown(ops []Op) []Op {
	seen := map[int64]time.Duration{} // value -> earliest return of a read of it
	for _, o := range ops {
		if o.Write || o.Unknown {
			continue
		}
		if r, ok := seen[o.Value]; !ok || o.Return < r {
			seen[o.Value] = o.Return
		}
	}
	out := make([]Op, 0, len(ops))
	for _, o := range ops {
		if o.Write && o.Unknown {
			r, ok := seen[o.Value]
			if !ok {
				continue
			}
			o.Unknown, o.Return = false, max(r, o.Call)
		}
		out = append(out, o)
	}
	return out
}

// LostWrites returns the acknowledged writes that a final read (made
// after the heal, when every process is back) shows to be lost: the
// final value must come from a write w (acknowledged or unknown) that no
// acknowledged write followed in real time; every acknowledged write that
// began after w had returned is lost. A final value that no write wrote
// (Absent, or a value never sent) loses every acknowledged write.
// The initial value 0 counts as a write that returned at time 0.
func LostWrites(ops []Op, final int64) []Op {
	source := Op{Write: true, Value: 0, Return: -1} // Create's write, before any call
	found := final == 0
	for _, o := range ops {
		if o.Write && o.Value == final && final != 0 {
			source, found = o, true
			break
		}
	}
	var lost []Op
	for _, o := range ops {
		if !o.Write || o.Unknown || o.Value == final {
			continue
		}
		if !found || (!source.Unknown && o.Call > source.Return) {
			lost = append(lost, o)
		}
	}
	return lost
}

// StaleRead finds a read that explains a linearizability violation in
// terms a person can check: it returned a value no write wrote, or the
// value of a write that an acknowledged write had replaced before the
// read began. ok is false if no single read shows it (the violation
// lies in an ordering of several reads).
func StaleRead(ops []Op) (read, overwritten, replacedBy Op, ok bool) {
	writes := map[int64]Op{0: {Write: true}}
	for _, o := range ops {
		if o.Write {
			writes[o.Value] = o
		}
	}
	for _, r := range ops {
		if r.Write {
			continue
		}
		w, known := writes[r.Value]
		if !known {
			return r, Op{}, Op{}, true
		}
		if w.Unknown {
			continue
		}
		for _, w2 := range ops {
			if w2.Write && !w2.Unknown && w2.Value != r.Value && w2.Call > w.Return && w2.Return < r.Call {
				return r, w, w2, true
			}
		}
	}
	return Op{}, Op{}, Op{}, false
}

// Excerpt returns the operations of ops whose interval meets [from, to],
// at most max of them, one per line.
func Excerpt(ops []Op, from, to time.Duration, max int) string {
	var b strings.Builder
	n := 0
	for _, o := range ops {
		end := o.Return
		if o.Unknown {
			end = math.MaxInt64
		}
		if end < from || o.Call > to {
			continue
		}
		if n == max {
			b.WriteString("\t...\n")
			break
		}
		b.WriteString("\t" + o.String() + "\n")
		n++
	}
	return b.String()
}

// TokenCheck watches fencing tokens handed out for one key (a pin or the
// singleton) and reports an owner whose token is smaller than one already
// observed, by an observation that ended before this one began.
type TokenCheck struct {
	mu   sync.Mutex
	seen []tokenSeen
}

type tokenSeen struct {
	owner     string
	token     uint64
	from, end time.Duration
}

// Observe records that owner held token between from and end (the
// request's call and return), and returns a description of the
// regression it shows, or "". With newOnly, only the first observation
// of an (owner, token) pair is checked: an old instance may still be
// seen running after a new one started (a singleton between a cut and
// failure detection), but a new one must never carry a smaller token.
func (c *TokenCheck) Observe(owner string, token uint64, from, end time.Duration, newOnly bool) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.seen, func(s tokenSeen) bool { return s.owner == owner && s.token == token })
	msg := ""
	if i < 0 || !newOnly {
		for _, s := range c.seen {
			if s.end < from && s.token > token && s.owner != owner {
				msg = fmt.Sprintf("token %d of %s seen at %v after token %d of %s seen at %v",
					token, owner, from.Round(time.Millisecond), s.token, s.owner, s.end.Round(time.Millisecond))
				break
			}
		}
	}
	// Keep only the newest observation of each (owner, token) pair, so
	// that the list stays as short as the number of distinct owners.
	if i >= 0 {
		c.seen[i].end = max(c.seen[i].end, end)
	} else {
		c.seen = append(c.seen, tokenSeen{owner, token, from, end})
	}
	return msg
}

// Percentile returns the p-th percentile (0..100) of ds, by the nearest
// rank; 0 for none.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank-1, 0), len(s)-1)]
}
