package quorum

import (
	"strings"
	"testing"
	"time"
)

func names(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func TestHolds(t *testing.T) {
	for _, tc := range []struct {
		live, failed string
		want         bool
	}{
		{"a", "", true}, // a cluster of one
		{"a,b", "c", true},
		{"c", "a,b", false},
		{"a,b,c", "d,e", true},
		{"d,e", "a,b,c", false},
		// Even splits: the half holding the first name acts, the other
		// does not, whichever node asks.
		{"a", "b", true},
		{"b", "a", false},
		{"b,c", "a,d", false},
		{"a,d", "b,c", true},
		{"", "a", false},
	} {
		if got := Holds(names(tc.live), names(tc.failed)); got != tc.want {
			t.Errorf("Holds(%q, %q) = %v, want %v", tc.live, tc.failed, got, tc.want)
		}
	}
}

// Both sides of every split of a cluster compute the rule; at most one
// side may act, and exactly one when the split is in two.
func TestHoldsOneSideOfEverySplit(t *testing.T) {
	all := []string{"n1", "n2", "n3", "n4", "n5", "n6"}
	for size := 2; size <= len(all); size++ {
		nodes := all[:size]
		for mask := 1; mask < 1<<size-1; mask++ {
			var a, b []string
			for i, n := range nodes {
				if mask&(1<<i) != 0 {
					a = append(a, n)
				} else {
					b = append(b, n)
				}
			}
			ha, hb := Holds(a, b), Holds(b, a)
			if ha == hb {
				t.Errorf("split %v | %v: sides hold %v and %v", a, b, ha, hb)
			}
		}
	}
}

func TestFailuresWindow(t *testing.T) {
	f := NewFailures(time.Minute)
	t0 := time.Unix(1000, 0)
	f.Failed("a", t0)
	f.Failed("b", t0)
	if Holds([]string{"c"}, f.Lost([]string{"c"}, nil, t0.Add(time.Second))) {
		t.Fatal("one live of three (two failed just now) must not hold")
	}
	f.Forget("a")
	if Holds([]string{"c"}, f.Lost([]string{"c"}, nil, t0.Add(time.Second))) {
		t.Fatal("c alone against b, which sorts first, must not hold")
	}
	if !Holds([]string{"c", "b"}, f.Lost([]string{"c", "b"}, nil, t0.Add(time.Second))) {
		t.Fatal("a member live again does not count as failed")
	}
	if !Holds([]string{"c", "b"}, f.Lost([]string{"c", "b"}, []string{"a"}, t0.Add(time.Second))) {
		t.Fatal("two live of three (one suspect) must hold")
	}
	if Holds([]string{"c"}, f.Lost([]string{"c"}, []string{"b"}, t0.Add(time.Second))) {
		t.Fatal("c alone against a suspect b, which sorts first, must not hold")
	}
	if n := f.Recent(t0.Add(2 * time.Minute)); len(n) != 0 {
		t.Fatalf("failures older than the window still count: %v", n)
	}
	if len(f.at) != 0 {
		t.Fatal("old failures are not forgotten")
	}
}

func TestPoll(t *testing.T) {
	for _, tc := range []struct {
		self, live, lost, yes string
		want                  bool
	}{
		{"a", "a,b,c,d,e", "", "b", false},
		{"a", "a,b,c,d,e", "", "b,c", true},
		{"a", "a,b,c", "d,e", "b", false},  // the lost count against
		{"a", "a,b,c", "d,e", "b,c", true}, // three of five answered
		{"a", "a", "b", "", true},          // an even split: a sorts first
		{"b", "b", "a", "", false},         // and b does not
		{"a", "a,b", "", "", true},         // b silent: a holds the tie-break
		{"a", "a,b,c", "", "a", false},     // self is counted once
	} {
		got := Poll(tc.self, names(tc.live), names(tc.lost), func(v string) bool {
			return strings.Contains(","+tc.yes+",", ","+v+",")
		})
		if got != tc.want {
			t.Errorf("Poll(%q, live %q, lost %q, yes %q) = %v, want %v", tc.self, tc.live, tc.lost, tc.yes, got, tc.want)
		}
	}
}
