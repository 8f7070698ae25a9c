package faultsuite

import (
	"slices"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/assert"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestLinearizableRegister(t *testing.T) {
	ok := []Op{
		{Client: 0, Write: true, Value: 1, Call: ms(0), Return: ms(10)},
		{Client: 1, Value: 1, Call: ms(20), Return: ms(30)},
		{Client: 0, Write: true, Value: 2, Call: ms(40), Unknown: true},
		{Client: 1, Value: 1, Call: ms(50), Return: ms(60)}, // the unknown write not yet applied
		{Client: 1, Value: 2, Call: ms(70), Return: ms(80)}, // now it is
	}
	assert.Equal(t, porcupine.Ok, Linearizable(ok, time.Second))

	stale := append(ok[:len(ok):len(ok)], Op{Client: 2, Value: 1, Call: ms(90), Return: ms(100)})
	assert.Equal(t, porcupine.Illegal, Linearizable(stale, time.Second))
	r, w, w2, found := StaleRead([]Op{ok[0], {Write: true, Value: 3, Call: ms(20), Return: ms(30)}, {Value: 1, Call: ms(40), Return: ms(50)}})
	assert.True(t, found)
	assert.Equal(t, int64(1), r.Value)
	assert.Equal(t, int64(1), w.Value)
	assert.Equal(t, int64(3), w2.Value)

	absent := []Op{ok[0], {Client: 1, Value: Absent, Call: ms(20), Return: ms(30)}}
	assert.Equal(t, porcupine.Illegal, Linearizable(absent, time.Second))
}

// A partition round leaves many writes of unknown outcome, each
// concurrent with everything after it; unreduced, porcupine's search
// runs out of time on such a history of about a hundred operations.
func TestLinearizableManyUnknownWrites(t *testing.T) {
	ops := []Op{{Client: 0, Write: true, Value: 1, Call: ms(0), Return: ms(10)}}
	for i := range 60 {
		at := ms(20 + 10*i)
		ops = append(ops,
			Op{Client: 1 + i%3, Write: true, Value: int64(100 + i), Call: at, Unknown: true},
			Op{Client: 4, Value: 1, Call: at + ms(1), Return: at + ms(2)})
	}
	// One of them took effect, late: the last reads see it.
	end := ms(20 + 10*60)
	ops = append(ops, Op{Client: 4, Value: 130, Call: end, Return: end + ms(1)})
	start := time.Now()
	assert.Equal(t, porcupine.Ok, Linearizable(ops, 10*time.Second))
	assert.Less(t, time.Since(start), 5*time.Second, "the search should not need its timeout")

	// A read of 1 after 130 was seen is stale, unknown writes or not.
	stale := append(slices.Clone(ops), Op{Client: 5, Value: 1, Call: end + ms(5), Return: end + ms(6)})
	assert.Equal(t, porcupine.Illegal, Linearizable(stale, 10*time.Second))

	// A read that returns an unknown write's value before that write
	// began is no less illegal for the rewrite.
	early := []Op{
		{Client: 0, Write: true, Value: 1, Call: ms(0), Return: ms(10)},
		{Client: 1, Value: 2, Call: ms(20), Return: ms(30)},
		{Client: 0, Write: true, Value: 2, Call: ms(40), Unknown: true},
	}
	assert.Equal(t, porcupine.Illegal, Linearizable(early, time.Second))
}

func TestLostWrites(t *testing.T) {
	ops := []Op{
		{Write: true, Value: 1, Call: ms(0), Return: ms(10)},
		{Write: true, Value: 2, Call: ms(20), Return: ms(30)},
		{Write: true, Value: 3, Call: ms(40), Unknown: true},
		{Write: true, Value: 4, Call: ms(25), Return: ms(50)}, // concurrent with 2
	}
	assert.Empty(t, LostWrites(ops, 3), "an unknown write may be last")
	assert.Empty(t, LostWrites(ops, 2), "4 was concurrent with 2")
	assert.Len(t, LostWrites(ops, 1), 2, "2 and 4 began after 1 returned")
	assert.Len(t, LostWrites(ops, Absent), 3)
	assert.Len(t, LostWrites(ops, 0), 3)
}

func TestTokenCheck(t *testing.T) {
	var c TokenCheck
	assert.Empty(t, c.Observe("a", 5, ms(0), ms(10), false))
	assert.Empty(t, c.Observe("b", 7, ms(20), ms(30), false))
	assert.Empty(t, c.Observe("a", 5, ms(25), ms(28), false), "concurrent with b's observation")
	assert.NotEmpty(t, c.Observe("a", 5, ms(40), ms(50), false))
	assert.Empty(t, c.Observe("a", 5, ms(40), ms(50), true), "an old instance still running")
	assert.NotEmpty(t, c.Observe("c", 6, ms(60), ms(70), true), "a new instance with a smaller token")
}

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 3, 2, 4}
	assert.Equal(t, time.Duration(3), Percentile(ds, 50))
	assert.Equal(t, time.Duration(5), Percentile(ds, 99))
	assert.Equal(t, time.Duration(0), Percentile(nil, 50))
}
