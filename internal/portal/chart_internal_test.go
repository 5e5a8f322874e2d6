package portal

import (
	"regexp"
	"testing"
	"time"
)

// TestChartTicks checks the y axis labels are round numbers written
// briefly, whatever the step (floating-point sums must not show).
func TestChartTicks(t *testing.T) {
	tickRE := regexp.MustCompile(`<text class="tick" x="44" y="[\d.]+" text-anchor="end">([^<]+)</text>`)
	t0 := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		values []float64
		want   []string
	}{
		{[]float64{5.6, 6.04, 5.8}, []string{"5.50", "5.60", "5.70", "5.80", "5.90", "6.00", "6.10"}},
		{[]float64{160, 182}, []string{"160", "165", "170", "175", "180", "185"}},
		{[]float64{0.3, 1.4}, []string{"0.25", "0.50", "0.75", "1.00", "1.25", "1.50"}},
		{[]float64{70, 70}, []string{"60", "65", "70", "75", "80"}},
	} {
		c := chart{Code: "x", Title: "x", Series: []chartSeries{{Name: "x"}}}
		for i, v := range tc.values {
			c.Series[0].Points = append(c.Series[0].Points, point{When: t0.AddDate(i, 0, 0), Value: v, Text: "v"})
		}
		var got []string
		for _, m := range tickRE.FindAllStringSubmatch(string(drawChart(c, 360, 160)), -1) {
			got = append(got, m[1])
		}
		if len(got) != len(tc.want) {
			t.Errorf("%v: ticks %v, want %v", tc.values, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%v: ticks %v, want %v", tc.values, got, tc.want)
				break
			}
		}
	}
}
