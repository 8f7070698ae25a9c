package main

import "testing"

// The tour must keep working: the README runs it first.
func TestQuickstart(t *testing.T) {
	if err := run(); err != nil {
		t.Fatal(err)
	}
}
