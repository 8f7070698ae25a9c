package naming

import (
	"bytes"
	"fmt"
)

// Binding is what a name is bound to, as this node's copy of the tree
// shows it. Bindings are immutable values shared by every reader: do not
// modify an Offer's Value.
type Binding struct {
	Name        string
	Scope       Scope
	Clusterable bool
	// Offers holds one offer, or for a clusterable name one per node that
	// binds it, sorted by node name. Never empty in a Binding returned by
	// Lookup.
	Offers []Offer
}

// Offer is one node's value for a name.
type Offer struct {
	// Node is the node that offers the value (node scope), or the node
	// that last wrote it (cluster scope, where the value outlives it).
	Node string
	// Value is the bound bytes; shared, do not modify.
	Value []byte
	// Claimed is the hybrid-logical-clock time of Node's first Bind of the
	// name (its Rebinds keep it; for cluster scope, the first Bind of the
	// value's lineage). A node that binds a name after seeing another
	// node's binding of it gets a larger Claimed, so the value serves as a
	// fencing token: replication's pins and singletons hand it out.
	Claimed uint64
}

// Child is one entry of List: a bound name, a context with names below
// it, or both.
type Child struct {
	// Name is the full name, e.g. "jms/queues".
	Name string
	// Context is true when names exist below Name.
	Context bool
	// Bound is true when Name itself is bound; Binding is then set.
	Bound   bool
	Binding Binding
}

// EventType says what happened to a name.
type EventType int

const (
	// EventBound: a name that was not bound now is.
	EventBound EventType = iota + 1
	// EventRebound: a bound name changed value or offers.
	EventRebound
	// EventUnbound: a name is no longer bound.
	EventUnbound
	// EventConflict: this node bound a name at the same moment as another
	// node, and lost. Binding is the winner; Old is what this node had
	// bound, which has been removed everywhere. Delivered only on the
	// losing node.
	EventConflict
)

func (t EventType) String() string {
	switch t {
	case EventBound:
		return "bound"
	case EventRebound:
		return "rebound"
	case EventUnbound:
		return "unbound"
	case EventConflict:
		return "conflict"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one change of the tree.
type Event struct {
	Type EventType
	Name string
	// Binding is the name's binding after the change (zero for Unbound).
	Binding Binding
	// Old is the binding before the change (zero for Bound); for a
	// Conflict, this node's losing binding.
	Old Binding
}

// entry is what the radix tree stores: the published Binding and, for the
// common single-offer case, its offer in the same allocation, so that
// Lookup returns a copy of b without allocating.
type entry struct {
	b   Binding
	one [1]Offer
}

func sameEntry(a, b *entry) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.b.Scope != b.b.Scope || a.b.Clusterable != b.b.Clusterable || len(a.b.Offers) != len(b.b.Offers) {
		return false
	}
	for i := range a.b.Offers {
		x, y := a.b.Offers[i], b.b.Offers[i]
		if x.Node != y.Node || x.Claimed != y.Claimed || !bytes.Equal(x.Value, y.Value) {
			return false
		}
	}
	return true
}

func (e *entry) binding() Binding {
	if e == nil {
		return Binding{}
	}
	return e.b
}
