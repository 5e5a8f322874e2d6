package password

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// fast keeps the default test run quick; the defaults are tested once.
var fast = Params{Memory: 256, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func TestHashVerify(t *testing.T) {
	ctx := context.Background()
	enc, err := HashWith(ctx, "correct horse battery staple", fast)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=256,t=1,p=1$") {
		t.Fatalf("encoding %q", enc)
	}
	for pw, want := range map[string]bool{
		"correct horse battery staple":  true,
		"correct horse battery staple ": false,
		"Correct horse battery staple":  false,
		"":                              false,
	} {
		ok, err := Verify(ctx, pw, enc)
		if err != nil || ok != want {
			t.Errorf("Verify(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
	again, _ := HashWith(ctx, "correct horse battery staple", fast)
	if again == enc {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
}

func TestDefaultParams(t *testing.T) {
	ctx := context.Background()
	enc, err := Hash(ctx, "pässwörd")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=65536,t=3,p=2$") {
		t.Fatalf("encoding %q", enc)
	}
	if ok, err := Verify(ctx, "pässwörd", enc); !ok || err != nil {
		t.Fatalf("Verify = %v, %v", ok, err)
	}
	if NeedsRehash(enc, DefaultParams) {
		t.Fatal("fresh default hash needs rehash")
	}
}

// TestReferenceVector checks interoperability with the reference C
// implementation: `echo -n password | argon2 somesalt -id -t 2 -m 16 -p 4 -l 32 -e`.
func TestReferenceVector(t *testing.T) {
	const ref = "$argon2id$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo"
	ok, err := Verify(context.Background(), "password", ref)
	if err != nil || !ok {
		t.Fatalf("reference hash: %v, %v", ok, err)
	}
	if ok, _ := Verify(context.Background(), "passwore", ref); ok {
		t.Fatal("wrong password matches the reference hash")
	}
}

func TestMalformed(t *testing.T) {
	cases := map[string]string{
		"": "fields",
		"$argon2i$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG":                "not argon2id",
		"$argon2id$v=16$m=65536,t=2,p=4$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo":    "version 16",
		"$argon2id$v=19$m=65536,t=2$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo":        "parameter field",
		"$argon2id$v=19$m=9999999,t=2,p=4$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo":  "memory",
		"$argon2id$v=19$m=65536,t=1000,p=4$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo": "time",
		"$argon2id$v=19$m=65536,t=2,p=4$c29tZXNhbHQ=$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo":   "salt",
		"$argon2id$v=19$m=65536,t=2,p=4$c29t$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo":           "salt of 3 bytes",
		"$argon2id$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$GpZ3sK":                                         "hash",
	}
	for enc, want := range cases {
		ok, err := Verify(context.Background(), "password", enc)
		if ok || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), want) {
			t.Errorf("Verify(%q) = %v, %v; want ErrMalformed mentioning %q", enc, ok, err, want)
		}
		if !NeedsRehash(enc, DefaultParams) {
			t.Errorf("NeedsRehash(%q) = false for a malformed hash", enc)
		}
	}
}

func TestNeedsRehash(t *testing.T) {
	enc, _ := HashWith(context.Background(), "pw", fast)
	if !NeedsRehash(enc, DefaultParams) {
		t.Fatal("weak hash does not need rehash under the defaults")
	}
	if NeedsRehash(enc, fast) {
		t.Fatal("hash needs rehash under its own parameters")
	}
}

func TestHashRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	if _, err := HashWith(ctx, "", fast); err == nil {
		t.Error("empty password hashed")
	}
	if _, err := HashWith(ctx, strings.Repeat("x", maxPassword+1), fast); err == nil {
		t.Error("over-long password hashed")
	}
	if _, err := HashWith(ctx, "pw", Params{Memory: 256, Time: 1, Threads: 1, SaltLen: 4, KeyLen: 32}); err == nil {
		t.Error("4-byte salt accepted")
	}
}

func TestWaitingRespectsContext(t *testing.T) {
	// Fill every slot, then a hash must give up when its context ends.
	for range MaxConcurrent {
		slots <- struct{}{}
	}
	defer func() {
		for range MaxConcurrent {
			<-slots
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := HashWith(ctx, "pw", fast)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func BenchmarkHashDefault(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		if _, err := Hash(ctx, "correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}
