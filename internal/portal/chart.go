package portal

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/fhir"
)

// chartSpec is a result the results page charts: a LOINC code, and for
// panels such as blood pressure the component codes that are its series.
type chartSpec struct {
	Code, Title string
	Components  []series
}

type series struct{ Code, Name string }

var charts = []chartSpec{
	{Code: "2093-3", Title: "Total cholesterol"},
	{Code: "18262-6", Title: "LDL cholesterol"},
	{Code: "2085-9", Title: "HDL cholesterol"},
	{Code: "2571-8", Title: "Triglycerides"},
	{Code: "4548-4", Title: "Hemoglobin A1c"},
	{Code: "2339-0", Title: "Glucose"},
	{Code: "85354-9", Title: "Blood pressure", Components: []series{{"8480-6", "Systolic"}, {"8462-4", "Diastolic"}}},
	{Code: "29463-7", Title: "Body weight"},
	{Code: "39156-5", Title: "Body mass index"},
	{Code: "8302-2", Title: "Body height"},
}

// maxPoints bounds the points of one chart (the most recent are kept).
const maxPoints = 500

// point is one value of a series.
type point struct {
	When  time.Time
	Date  string
	Value float64
	// Text is the value exactly as recorded, with its unit.
	Text string
	Link string
}

// chart is a rendered chart with its table.
type chart struct {
	Code, Title, Unit string
	Series            []chartSeries
	SVG               template.HTML
	Rows              []chartRow
	Link              string
	Err               string
}

type chartSeries struct {
	Name   string
	Points []point
}

// chartRow is one line of the values table: a date and one value per series.
type chartRow struct {
	Date   string
	Values []string
	Link   string
}

// results shows the charts: all known ones with data in small, or one
// (?code=) in full with its values table.
func (p *Portal) results(q *req) error {
	code := q.r.URL.Query().Get("code")
	if code != "" {
		spec, err := specFor(code)
		if err != nil {
			return err
		}
		c := p.loadChart(q, spec, maxPoints)
		c.SVG = drawChart(c, 720, 300)
		return p.render(q, http.StatusOK, "chart", map[string]any{"Title": c.Title, "Chart": c, "Charts": charts})
	}
	// One search for every chart's code, split here: one query instead of
	// one per chart.
	codes := make([]string, len(charts))
	for i, c := range charts {
		codes[i] = "http://loinc.org|" + c.Code
	}
	res, _, err := q.api.search("Observation", url.Values{
		"patient": {q.pid}, "code": {strings.Join(codes, ",")}, "_sort": {"-date"}, "_count": {"1000"},
		"_elements": {"code,effectiveDateTime,effectivePeriod,effectiveInstant,issued,valueQuantity,component"},
	})
	out := make([]chart, len(charts))
	for i, spec := range charts {
		if err != nil {
			out[i] = chart{Code: spec.Code, Title: spec.Title, Err: fhir.AsError(err).Error()}
			continue
		}
		var mine []obj
		for _, r := range res {
			if hasLOINC(r.get("code"), spec.Code) && len(mine) < 100 {
				mine = append(mine, r)
			}
		}
		c := buildChart(q.pid, spec, mine)
		c.SVG = drawChart(c, 360, 160)
		out[i] = c
	}
	var with, without []chart
	for _, c := range out {
		if len(c.Rows) > 0 || c.Err != "" {
			with = append(with, c)
		} else {
			without = append(without, c)
		}
	}
	return p.render(q, http.StatusOK, "results", map[string]any{"Title": "Results", "Charts": with, "Empty": without})
}

// specFor returns the chart of a LOINC code; codes without a predefined
// chart get a single-series one.
func specFor(code string) (chartSpec, error) {
	for _, c := range charts {
		if c.Code == code {
			return c, nil
		}
	}
	for _, r := range code {
		if !(r >= '0' && r <= '9' || r == '-') {
			return chartSpec{}, fhir.BadRequest("code: %q is not a LOINC code", code)
		}
	}
	return chartSpec{Code: code, Title: "LOINC " + code}, nil
}

// loadChart searches the patient's Observations with the code, newest
// first, and builds the series.
func (p *Portal) loadChart(q *req, spec chartSpec, limit int) chart {
	res, _, err := q.api.search("Observation", url.Values{
		"patient": {q.pid}, "code": {"http://loinc.org|" + spec.Code}, "_sort": {"-date"}, "_count": {strconv.Itoa(limit)},
	})
	if err != nil {
		return chart{Code: spec.Code, Title: spec.Title, Err: fhir.AsError(err).Error()}
	}
	return buildChart(q.pid, spec, res)
}

// buildChart makes the series and table of Observations given newest first.
func buildChart(pid string, spec chartSpec, res []obj) chart {
	c := chart{Code: spec.Code, Title: spec.Title, Link: "/p/" + url.PathEscape(pid) + "/results?code=" + url.QueryEscape(spec.Code)}
	names := []series{{spec.Code, spec.Title}}
	if len(spec.Components) > 0 {
		names = spec.Components
	}
	c.Series = make([]chartSeries, len(names))
	for i, s := range names {
		c.Series[i].Name = s.Name
	}
	for i := len(res) - 1; i >= 0; i-- { // oldest first
		r := res[i]
		d := ""
		for _, k := range [][]any{{"effectiveDateTime"}, {"effectivePeriod", "start"}, {"effectiveInstant"}, {"issued"}} {
			if d = r.str(k...); d != "" {
				break
			}
		}
		when, ok := parseFHIRTime(d)
		if !ok {
			continue
		}
		link := resourceLink(pid, r.ref())
		row := chartRow{Date: fmtDate(d), Link: link, Values: make([]string, len(names))}
		has := false
		for si, s := range names {
			qty := r.obj("valueQuantity")
			if len(spec.Components) > 0 {
				qty = nil
				for _, comp := range r.list("component") {
					if hasLOINC(comp.get("code"), s.Code) {
						qty = comp.obj("valueQuantity")
					}
				}
			}
			if qty == nil || qty.str("value") == "" {
				continue
			}
			v, err := strconv.ParseFloat(qty.str("value"), 64)
			if err != nil {
				continue
			}
			if c.Unit == "" {
				c.Unit = qty.str("unit")
				if c.Unit == "" {
					c.Unit = qty.str("code")
				}
			}
			row.Values[si] = quantity(map[string]any(qty))
			c.Series[si].Points = append(c.Series[si].Points, point{When: when, Date: fmtDate(d), Value: v, Text: row.Values[si], Link: link})
			has = true
		}
		if has {
			c.Rows = append(c.Rows, row)
		}
	}
	// The table reads newest first.
	for i, j := 0, len(c.Rows)-1; i < j; i, j = i+1, j-1 {
		c.Rows[i], c.Rows[j] = c.Rows[j], c.Rows[i]
	}
	return c
}

func hasLOINC(cc any, code string) bool {
	m, ok := asMap(cc)
	if !ok {
		return false
	}
	for _, c := range obj(m).list("coding") {
		if c.str("code") == code && (c.str("system") == "http://loinc.org" || c.str("system") == "") {
			return true
		}
	}
	return false
}

// drawChart draws the series as an inline SVG line chart: time on x, value
// on y with rounded ticks, one polyline per series and a titled point per
// value (the title is the tooltip and what screen readers announce).
func drawChart(c chart, w, h int) template.HTML {
	var pts []point
	for _, s := range c.Series {
		pts = append(pts, s.Points...)
	}
	if len(pts) == 0 {
		return ""
	}
	const left, right, top, bottom = 48, 12, 12, 28
	pw, ph := float64(w-left-right), float64(h-top-bottom)
	t0, t1 := pts[0].When, pts[0].When
	v0, v1 := pts[0].Value, pts[0].Value
	for _, p := range pts {
		if p.When.Before(t0) {
			t0 = p.When
		}
		if p.When.After(t1) {
			t1 = p.When
		}
		v0, v1 = math.Min(v0, p.Value), math.Max(v1, p.Value)
	}
	lo, hi, step := niceRange(v0, v1)
	span := t1.Sub(t0).Seconds()
	x := func(t time.Time) float64 {
		if span == 0 {
			return left + pw/2
		}
		return left + pw*t.Sub(t0).Seconds()/span
	}
	y := func(v float64) float64 { return top + ph - ph*(v-lo)/(hi-lo) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" width="100%%" role="img" aria-labelledby="ct-%s"><title id="ct-%s">%s over time, %d values from %s to %s</title>`,
		w, h, html.EscapeString(c.Code), html.EscapeString(c.Code), html.EscapeString(c.Title), len(pts), t0.Format("2006-01-02"), t1.Format("2006-01-02"))
	// Grid and y ticks.
	decimals := max(0, int(math.Ceil(-math.Log10(step)+1e-9)))
	if step*math.Pow(10, float64(decimals)) != math.Round(step*math.Pow(10, float64(decimals))) {
		decimals++ // steps such as 2.5 or 0.25
	}
	for i := 0; ; i++ {
		v := lo + float64(i)*step
		if v > hi+step/2 {
			break
		}
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/><text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>`,
			left, w-right, y(v), y(v), left-4, y(v)+4, strconv.FormatFloat(v, 'f', decimals, 64))
	}
	// x ticks: first and last date, and the years between when they fit.
	fmt.Fprintf(&b, `<text class="tick" x="%d" y="%d" text-anchor="start">%s</text>`, left, h-8, t0.Format("2006-01-02"))
	if span > 0 {
		fmt.Fprintf(&b, `<text class="tick" x="%d" y="%d" text-anchor="end">%s</text>`, w-right, h-8, t1.Format("2006-01-02"))
	}
	for si, s := range c.Series {
		if len(s.Points) == 0 {
			continue
		}
		var poly []string
		for _, p := range s.Points {
			poly = append(poly, fmt.Sprintf("%.1f,%.1f", x(p.When), y(p.Value)))
		}
		fmt.Fprintf(&b, `<polyline class="line s%d" points="%s"/>`, si, strings.Join(poly, " "))
		if len(s.Points) <= 200 {
			for _, p := range s.Points {
				fmt.Fprintf(&b, `<circle class="pt s%d" cx="%.1f" cy="%.1f" r="3"><title>%s %s: %s</title></circle>`,
					si, x(p.When), y(p.Value), html.EscapeString(p.Date), html.EscapeString(s.Name), html.EscapeString(p.Text))
			}
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// niceRange widens [lo, hi] to round tick values (about five ticks).
func niceRange(lo, hi float64) (float64, float64, float64) {
	if hi == lo {
		d := math.Max(math.Abs(lo)*0.1, 1)
		lo, hi = lo-d, hi+d
	}
	raw := (hi - lo) / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	return math.Floor(lo/step) * step, math.Ceil(hi/step) * step, step
}
