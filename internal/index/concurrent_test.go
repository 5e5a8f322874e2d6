package index

import (
	"sync"
	"testing"
)

// TestConcurrentExtract extracts from several goroutines at once, the
// first ones building the extractors (run it with -race).
func TestConcurrentExtract(t *testing.T) {
	rs := readBundle(t, sharedData(t, syntheaPatient))
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var e Entries
			for _, r := range rs[g*100 : g*100+300] {
				e.Reset()
				x, _ := For(r.GetString("resourceType"))
				if err := x.Append(&e, r); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
}
