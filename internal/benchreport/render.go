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
// and unit), value, baseline (name and value), ratio (value / baseline).
func Table(rows []Row) string {
	var b strings.Builder
	b.WriteString("| component | figure | value | baseline | ratio |\n")
	b.WriteString("|---|---|---:|---|---:|\n")
	for _, r := range rows {
		base, ratio := "—", "—"
		if r.BaseName != "" {
			base = fmt.Sprintf("%s = %s", r.BaseName, formatValue(r.BaseValue))
		}
		if q, ok := r.Ratio(); ok {
			ratio = strconv.FormatFloat(q, 'f', 2, 64) + "×"
		}
		fmt.Fprintf(&b, "| %s | %s %s | %s | %s | %s |\n", r.Component, r.Figure, r.Unit, formatValue(r.Value), base, ratio)
	}
	return b.String()
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
