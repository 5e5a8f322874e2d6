package index

import (
	"strings"
	"testing"
	"time"
)

func TestNormalizeString(t *testing.T) {
	for in, want := range map[string]string{
		"":                    "",
		"abc":                 "abc",
		"Chalmers":            "chalmers",
		"  Peter   James ":    "peter james",
		"a\tb\nc":             "a b c",
		"Zoë Ångström":        "zoe angstrom",
		"Bénédicte du Marché": "benedicte du marche",
		"MÜLLER":              "muller",
		"Nguyễn Thị Minh":     "nguyen thi minh",
		"ÇA":                  "ca",
		"Ωμέγα":               "ωμεγα",
		"São\u00a0Paulo":      "sao paulo", // no-break space is white space
		"e\u0301":             "e",         // already decomposed
		"東京":                  "東京",
	} {
		if got := NormalizeString(in); got != want {
			t.Errorf("NormalizeString(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNormalizeStringNoAllocWhenNormal(t *testing.T) {
	s := strings.Repeat("already normal text ", 4)[:79]
	if n := testing.AllocsPerRun(100, func() { _ = NormalizeString(s) }); n != 0 {
		t.Errorf("NormalizeString of normal text allocates %v times", n)
	}
}

func micros(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMicro()
}

func TestDateRange(t *testing.T) {
	tests := []struct{ in, low, high string }{
		{"2019", "2019-01-01T00:00:00Z", "2019-12-31T23:59:59.999999Z"},
		{"2019-02", "2019-02-01T00:00:00Z", "2019-02-28T23:59:59.999999Z"},
		{"2020-02", "2020-02-01T00:00:00Z", "2020-02-29T23:59:59.999999Z"},
		{"2019-12", "2019-12-01T00:00:00Z", "2019-12-31T23:59:59.999999Z"},
		{"2019-05-02", "2019-05-02T00:00:00Z", "2019-05-02T23:59:59.999999Z"},
		{"2019-05-02T10:00:00Z", "2019-05-02T10:00:00Z", "2019-05-02T10:00:00.999999Z"},
		{"2019-05-02T10:00:00", "2019-05-02T10:00:00Z", "2019-05-02T10:00:00.999999Z"},
		{"2019-05-02T10:00:00+02:00", "2019-05-02T08:00:00Z", "2019-05-02T08:00:00.999999Z"},
		{"2019-05-02T10:00:00-05:30", "2019-05-02T15:30:00Z", "2019-05-02T15:30:00.999999Z"},
		{"2019-12-31T23:30:00-01:00", "2020-01-01T00:30:00Z", "2020-01-01T00:30:00.999999Z"},
		{"2010-09-16T12:21:06.190+02:00", "2010-09-16T10:21:06.19Z", "2010-09-16T10:21:06.190999Z"},
		{"2010-09-16T12:21:06.5Z", "2010-09-16T12:21:06.5Z", "2010-09-16T12:21:06.599999Z"},
		{"2010-09-16T12:21:06.123456Z", "2010-09-16T12:21:06.123456Z", "2010-09-16T12:21:06.123456Z"},
		{"2010-09-16T12:21:06.123456789Z", "2010-09-16T12:21:06.123456Z", "2010-09-16T12:21:06.123456Z"},
		{"2019-05-02T10:00Z", "2019-05-02T10:00:00Z", "2019-05-02T10:00:59.999999Z"},
		{"2019-05-02T10", "2019-05-02T10:00:00Z", "2019-05-02T10:59:59.999999Z"},
		{"1959-07-30T11:21:06+01:00", "1959-07-30T10:21:06Z", "1959-07-30T10:21:06.999999Z"},
		{"0001", "0001-01-01T00:00:00Z", "0001-12-31T23:59:59.999999Z"},
		{"9999-12-31", "9999-12-31T00:00:00Z", "9999-12-31T23:59:59.999999Z"},
	}
	for _, tc := range tests {
		low, high, err := DateRange(tc.in)
		if err != nil {
			t.Errorf("DateRange(%q): %v", tc.in, err)
			continue
		}
		if low != micros(tc.low) || high != micros(tc.high) {
			t.Errorf("DateRange(%q) = [%s, %s], want [%s, %s]", tc.in,
				time.UnixMicro(low).UTC().Format(time.RFC3339Nano), time.UnixMicro(high).UTC().Format(time.RFC3339Nano), tc.low, tc.high)
		}
	}
	for in, msg := range map[string]string{
		"":                          "year",
		"19":                        "year",
		"0000":                      "year",
		"2019-13":                   "month",
		"2019-1":                    "month",
		"2019-02-29":                "day out of range",
		"2019-04-31":                "day out of range",
		"2019-05-02T25:00:00Z":      "hour",
		"2019-05-02T10:60:00Z":      "minutes",
		"2019-05-02T10:00:61Z":      "seconds",
		"2019-05T10:00:00Z":         "full date",
		"2019-05-02T10:00:00.Z":     "digits after the decimal point",
		"2019-05-02T10:00:00+2:00":  "time zone",
		"2019-05-02T10:00:00+15:00": "time zone",
		"2019-05-02 10:00":          "unexpected",
		"2019-05-02Z":               "unexpected",
		"yesterday":                 "year",
	} {
		_, _, err := DateRange(in)
		if err == nil || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), "\""+in+"\"") {
			t.Errorf("DateRange(%q) error = %v, want one naming the value and %q", in, err, msg)
		}
	}
}

func TestDecimalRange(t *testing.T) {
	tests := []struct {
		in               string
		value, low, high float64
	}{
		{"100", 100, 99.5, 100.5},
		{"1.5", 1.5, 1.45, 1.55},
		{"1.50", 1.5, 1.495, 1.505},
		{"-2.25", -2.25, -2.255, -2.245},
		{"0", 0, -0.5, 0.5},
		{"167.7", 167.7, 167.65, 167.75},
		{"0.0", 0, -0.05, 0.05},
		{"-0.25", -0.25, -0.255, -0.245},
		{"0.001", 0.001, 0.0005, 0.0015},
		{"123456789012345678901", 123456789012345678901, 123456789012345678900.5, 123456789012345678901.5},
		{"1e2", 100, 50, 150},
		{"1.0E-2", 0.01, 0.0095, 0.0105},
		{"7.6958032760322", 7.6958032760322, 7.69580327603215, 7.69580327603225},
	}
	for _, tc := range tests {
		v, low, high, err := DecimalRange(tc.in)
		if err != nil {
			t.Errorf("DecimalRange(%q): %v", tc.in, err)
			continue
		}
		// exact: the bounds are the float64 nearest the decimal bounds
		if v != tc.value || low != tc.low || high != tc.high {
			t.Errorf("DecimalRange(%q) = %v [%v, %v), want %v [%v, %v)", tc.in, v, low, high, tc.value, tc.low, tc.high)
		}
	}
	for _, in := range []string{"", "-", "1.", ".5", "1e", "1x", "abc", "1.5.2"} {
		if _, _, _, err := DecimalRange(in); err == nil || !strings.Contains(err.Error(), "invalid decimal") {
			t.Errorf("DecimalRange(%q) error = %v", in, err)
		}
	}
}
