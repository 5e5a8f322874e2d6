package importer

import "fmt"

// A history Bundle (Bundle.type "history", what GET [base]/T/id/_history
// answers) holds versions of resources, the newest first. Imported as it
// is, the newest version of each resource would be written first and each
// older one would be a second entry for the same resource. So its entries
// are imported in the reverse order, oldest first: each later version of
// a resource supplements the one before, as when the source is imported
// again after every change, and its local history follows the source's.
// A DELETE entry (a version that deleted the resource) deletes it in its
// place in that order.
//
// Reversing needs the whole Bundle. Its entries wait in a temporary file
// (the input text and what reading the entry found), not in memory, and
// are read back from the last; a chunk ends before an entry for a
// resource the chunk already has, so that each version is merged after
// the one before it is.

// historySpool keeps the entries of a history Bundle until its end.
type historySpool struct{ sp itemSpool }

func newHistorySpool() *historySpool {
	return &historySpool{sp: itemSpool{pattern: "phr-import-history-*"}}
}

// spooled is what a history entry keeps besides its input text.
type spooled struct {
	spooledInput
	Key    string `json:"k,omitempty"`
	Reject bool   `json:"r,omitempty"`
}

// add keeps an entry's item (key: its "Type/id", when known).
func (h *historySpool) add(it *item, key string) error {
	err := h.sp.put(spooled{spooledInput: inputOf(it), Key: key, Reject: it.act == actReject}, it.raw)
	if err != nil {
		return fmt.Errorf("history Bundle entry %d: %w", it.entry-1, err)
	}
	return nil
}

// readBack calls f with each entry's item and key, the last entry first.
func (h *historySpool) readBack(f func(*item, string) error) error {
	for i := h.sp.len() - 1; i >= 0; i-- {
		var s spooled
		raw, err := h.sp.get(i, &s)
		if err != nil {
			return err
		}
		it := s.item(raw)
		if s.Reject {
			it.act = actReject
		}
		if err := f(it, s.Key); err != nil {
			return err
		}
	}
	return nil
}

// close removes the spool's file.
func (h *historySpool) close() { h.sp.close() }
