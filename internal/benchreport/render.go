package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// formatValue prints v with about four significant digits and no
// exponent for the magnitudes benchmarks produce.
func formatValue(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a == 0:
		return "0"
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// Table renders rows as a Markdown table: component, figure (benchmark
// and unit), value, baseline (name and value), ratio (value / baseline),
// and, when some figure has a bar, the bar and the verdict.
func Table(rows []Row) string {
	bars := false
	for _, r := range rows {
		bars = bars || r.Bar != nil
	}
	var b strings.Builder
	if bars {
		b.WriteString("| component | figure | value | baseline | ratio | bar |\n")
		b.WriteString("|---|---|---:|---|---:|---|\n")
	} else {
		b.WriteString("| component | figure | value | baseline | ratio |\n")
		b.WriteString("|---|---|---:|---|---:|\n")
	}
	for _, r := range rows {
		base, ratio := "—", "—"
		if r.BaseName != "" {
			base = fmt.Sprintf("%s = %s", r.BaseName, formatValue(r.BaseValue))
		}
		if q, ok := r.Ratio(); ok {
			ratio = strconv.FormatFloat(q, 'f', 2, 64) + "×"
		}
		fmt.Fprintf(&b, "| %s | %s %s | %s | %s | %s |", r.Component, r.Figure, r.Unit, formatValue(r.Value), base, ratio)
		if bars {
			fmt.Fprintf(&b, " %s |", verdict(r))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// verdict is the bar column of r: empty without a bar.
func verdict(r Row) string {
	if r.Bar == nil {
		return ""
	}
	switch pass, ok := r.Check(); {
	case !ok:
		return r.Bar.String() + " (no ratio)"
	case pass:
		return r.Bar.String() + " pass"
	default:
		return r.Bar.String() + " **FAIL**"
	}
}

// Bars counts rows with a bar that pass and that fail (or cannot be
// judged).
func Bars(rows []Row) (pass, fail int) {
	for _, r := range rows {
		if r.Bar == nil {
			continue
		}
		if ok, judged := r.Check(); ok && judged {
			pass++
		} else {
			fail++
		}
	}
	return pass, fail
}

// Unpaired counts rows without a baseline (unpaired) and rows whose
// baseline is zero, so that no ratio exists (zeroBase).
func Unpaired(rows []Row) (unpaired, zeroBase int) {
	for _, r := range rows {
		switch {
		case r.BaseName == "":
			unpaired++
		case r.BaseValue == 0:
			zeroBase++
		}
	}
	return unpaired, zeroBase
}
