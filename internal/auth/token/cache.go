package token

import "sync"

// cache is a bounded LRU of verified tokens keyed by SHA-256 of the token.
// It is split into shards, each with its own lock and its own share of the
// capacity, so concurrent requests on several cores rarely wait on one
// another. Expiry is checked by the caller on every hit, so an entry never
// outlives its token.
type cache struct {
	shards [cacheShards]shard
}

const cacheShards = 16

type shard struct {
	mu    sync.Mutex
	max   int
	items map[[32]byte]*node
	head  node // sentinel: head.next is the most recently used
}

type node struct {
	key        [32]byte
	claims     Claims
	prev, next *node
}

func newCache(size int) *cache {
	c := &cache{}
	per := max(size/cacheShards, 1)
	for i := range c.shards {
		s := &c.shards[i]
		s.max = per
		s.items = make(map[[32]byte]*node)
		s.head.next, s.head.prev = &s.head, &s.head
	}
	return c
}

func (c *cache) shard(k [32]byte) *shard { return &c.shards[k[0]%cacheShards] }

func (s *shard) unlink(n *node) {
	n.prev.next, n.next.prev = n.next, n.prev
}

func (s *shard) pushFront(n *node) {
	n.prev, n.next = &s.head, s.head.next
	s.head.next.prev = n
	s.head.next = n
}

func (c *cache) get(k [32]byte) (Claims, bool) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.items[k]
	if n == nil {
		return Claims{}, false
	}
	if s.head.next != n {
		s.unlink(n)
		s.pushFront(n)
	}
	return n.claims, true
}

func (c *cache) put(k [32]byte, claims Claims) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.items[k]; n != nil {
		n.claims = claims
		s.unlink(n)
		s.pushFront(n)
		return
	}
	var n *node
	if len(s.items) >= s.max {
		// Reuse the least recently used node.
		n = s.head.prev
		s.unlink(n)
		delete(s.items, n.key)
	} else {
		n = &node{}
	}
	n.key, n.claims = k, claims
	s.items[k] = n
	s.pushFront(n)
}

func (c *cache) remove(k [32]byte) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.items[k]; n != nil {
		s.unlink(n)
		delete(s.items, k)
	}
}

func (c *cache) purge() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.items)
		s.head.next, s.head.prev = &s.head, &s.head
		s.mu.Unlock()
	}
}

func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.items)
		s.mu.Unlock()
	}
	return n
}
