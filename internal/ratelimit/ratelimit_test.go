package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(60, 3) // one per second, bursts of 3
	l.SetClock(func() time.Time { return now })
	for i := range 3 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("event %d of the burst refused", i+1)
		}
	}
	ok, wait := l.Allow("a")
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("4th event: ok=%v wait=%v, want refused with a wait up to 1s", ok, wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key is limited by the first")
	}
	now = now.Add(time.Second)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("a token did not come back after a second")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("a second token came back after a second")
	}
}

func TestLimiterBoundsKeys(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(60, 1)
	l.maxKeys = 10
	l.SetClock(func() time.Time { return now })
	allowed := 0
	for i := range 100 {
		if ok, _ := l.Allow(fmt.Sprint("k", i)); ok {
			allowed++
		}
	}
	if len(l.buckets) > 10 {
		t.Fatalf("%d buckets kept, limit 10", len(l.buckets))
	}
	if allowed != 11 { // 10 own buckets + one overflow token
		t.Fatalf("%d of 100 distinct keys allowed, want 11 (the rest share the overflow bucket)", allowed)
	}
	now = now.Add(time.Minute)
	if ok, _ := l.Allow("new"); !ok {
		t.Fatal("after a quiet minute a new key is still refused")
	}
}
