package clientauth

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// MemoryJTIs is a JTIChecker for a single server process (the embedded
// default). Replicas sharing a database need the store's implementation,
// since a replay may arrive at another replica. Entries are dropped once
// expired, so memory is bounded by the assertions of the last few minutes.
type MemoryJTIs struct {
	// Now is the clock used to drop expired entries; nil means time.Now.
	Now func() time.Time

	mu     sync.Mutex
	seen   map[string]time.Time
	pruned time.Time
}

// UseJTI records jti for clientID until expires, or reports ErrReplayed.
func (m *MemoryJTIs) UseJTI(ctx context.Context, clientID, jti string, expires time.Time) error {
	now := time.Now()
	if m.Now != nil {
		now = m.Now()
	}
	key := clientID + "\x00" + jti
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen == nil {
		m.seen = make(map[string]time.Time)
	}
	if now.Sub(m.pruned) > time.Minute {
		for k, exp := range m.seen {
			if now.After(exp) {
				delete(m.seen, k)
			}
		}
		m.pruned = now
	}
	if exp, ok := m.seen[key]; ok && !now.After(exp) {
		return fmt.Errorf("client %s jti %s: %w", clientID, jti, ErrReplayed)
	}
	m.seen[key] = expires
	return nil
}
