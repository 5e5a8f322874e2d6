package gcbudget

import (
	"runtime/debug"
	"testing"
)

func TestRaise(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	if Limit() != -1 {
		t.Fatalf("Limit before Enable = %d, want -1", Limit())
	}
	before := debug.SetMemoryLimit(-1)
	done := Raise(300) // not enabled: nothing changes
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("limit set without Enable: %d", got)
	}
	done()
	Enable(100)
	check := func(want int64) {
		t.Helper()
		if got := debug.SetMemoryLimit(-1); got != want || Limit() != want {
			t.Fatalf("limit %d (Limit %d), want %d", got, Limit(), want)
		}
	}
	check(100)
	a := Raise(200)
	check(200)
	b := Raise(150)
	check(200)
	c := Raise(200)
	a()
	check(200) // c holds 200 too
	a()        // a second call changes nothing
	check(200)
	c()
	check(150)
	b()
	check(100)
	d := Raise(50) // below the base
	check(100)
	d()
	check(100)
}
