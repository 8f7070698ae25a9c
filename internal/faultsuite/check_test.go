package faultsuite

import (
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
