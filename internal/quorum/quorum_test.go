package quorum

import (
	"testing"
	"time"
)

func TestHolds(t *testing.T) {
	for _, tc := range []struct {
		live, base int
		want       bool
	}{
		{1, 1, true},
		{2, 3, true},
		{1, 3, false},
		{3, 5, true},
		{2, 5, false},
		{1, 2, true}, // an even split: see the partition work (issue #12)
	} {
		if got := Holds(tc.live, tc.base); got != tc.want {
			t.Errorf("Holds(%d, %d) = %v, want %v", tc.live, tc.base, got, tc.want)
		}
	}
}

func TestFailuresWindow(t *testing.T) {
	f := NewFailures(time.Minute)
	t0 := time.Unix(1000, 0)
	f.Failed("a", t0)
	f.Failed("b", t0)
	if f.Holds(1, t0.Add(time.Second)) {
		t.Fatal("one live of three (two failed just now) must not hold")
	}
	f.Forget("b")
	if !f.Holds(1, t0.Add(time.Second)) {
		t.Fatal("one live of two must hold")
	}
	if n := f.Recent(t0.Add(2 * time.Minute)); n != 0 {
		t.Fatalf("failures older than the window still count: %d", n)
	}
	if len(f.at) != 0 {
		t.Fatal("old failures are not forgotten")
	}
}
