package bulk_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// BenchmarkBinariesInContext finds one patient's Binaries among 10,000
// (half of them with a securityContext, spread over 100 patients), as
// each single-patient export does (records.BinariesInContext).
//
//	go test ./internal/bulk -run '^$' -bench BinariesInContext
func BenchmarkBinariesInContext(b *testing.B) {
	for _, d := range storetest.Dialects() {
		b.Run(d, func(b *testing.B) {
			s := servertest.Start(b, d)
			tok := s.AdminToken()
			for chunk := range 10 {
				var entries []string
				for i := chunk * 1000; i < (chunk+1)*1000; i++ {
					sc := ""
					if i%2 == 0 {
						sc = fmt.Sprintf(`,"securityContext":{"reference":"Patient/p%d"}`, i%200/2)
					}
					entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Binary","id":"b%d","contentType":"text/plain","data":"SGk="%s},"request":{"method":"PUT","url":"Binary/b%d"}}`, i, sc, i))
				}
				r := s.Do("POST", "", tok, `{"resourceType":"Bundle","type":"transaction","entry":[`+strings.Join(entries, ",")+`]}`)
				if r.Status != 200 {
					b.Fatalf("transaction: %d %.300s", r.Status, r.Body)
				}
			}
			ctx := access.With(context.Background(), access.System{})
			b.ResetTimer()
			for b.Loop() {
				n := 0
				if err := s.App.Records.BinariesInContext(ctx, func(p string) bool { return p == "p7" }, func(string) { n++ }); err != nil {
					b.Fatal(err)
				}
				if n != 50 {
					b.Fatalf("%d Binaries, want 50", n)
				}
			}
		})
	}
}
