package authdb

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/auth/clientauth"
	"github.com/phr-project/phr/internal/auth/secret"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestJTIAndCodesAreSingleUse races many uses of one assertion id and one
// authorization code: exactly one wins, on both databases (replicas share
// the database, so this is what stops a replay reaching another replica).
func TestJTIAndCodesAreSingleUse(t *testing.T) {
	for _, dialect := range storetest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			d := New(storetest.Open(t, dialect))
			ctx := context.Background()
			const n = 16
			var wg sync.WaitGroup
			var mu sync.Mutex
			ok, replayed := 0, 0
			exp := time.Now().Add(5 * time.Minute)
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := d.UseJTI(ctx, "c1", "jti-1", exp)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						ok++
					case errors.Is(err, clientauth.ErrReplayed):
						replayed++
					default:
						t.Errorf("UseJTI: %v", err)
					}
				}()
			}
			wg.Wait()
			if ok != 1 || replayed != n-1 {
				t.Fatalf("%d uses succeeded, %d refused as replays; want 1 and %d", ok, replayed, n-1)
			}
			// The same jti of another client, and an expired entry, are fine.
			if err := d.UseJTI(ctx, "c2", "jti-1", exp); err != nil {
				t.Fatalf("same jti, other client: %v", err)
			}
			if err := d.UseJTI(ctx, "c1", "jti-old", time.Now().Add(-time.Second)); err != nil {
				t.Fatal(err)
			}
			if err := d.UseJTI(ctx, "c1", "jti-old", exp); err != nil {
				t.Fatalf("reuse after expiry: %v", err)
			}

			code := secret.New()
			if err := d.SaveCode(ctx, secret.Hash(code), Grant{ClientID: "c1", UserID: "u1", Scope: "patient/*.rs", Expires: exp}); err != nil {
				t.Fatal(err)
			}
			wins := make(chan struct{}, n)
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := d.TakeCode(ctx, secret.Hash(code)); err == nil {
						wins <- struct{}{}
					} else if !errors.Is(err, ErrNotFound) {
						t.Errorf("TakeCode: %v", err)
					}
				}()
			}
			wg.Wait()
			if len(wins) != 1 {
				t.Fatalf("the code was redeemed %d times", len(wins))
			}
			// Expired codes are refused.
			old := secret.New()
			d.SaveCode(ctx, secret.Hash(old), Grant{ClientID: "c1", UserID: "u1", Expires: time.Now().Add(-time.Second)})
			if _, err := d.TakeCode(ctx, secret.Hash(old)); !errors.Is(err, ErrNotFound) {
				t.Fatalf("expired code: %v", err)
			}
		})
	}
}
