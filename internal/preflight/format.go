package preflight

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

var symbols = map[Status]string{StatusPass: "✔", StatusWarn: "!", StatusFail: "✘", StatusSkip: "-"}

// WriteText writes r as a table, one line per check: a status symbol, the
// name, the detail, and "→ hint" when there is one; then a summary line.
func WriteText(w io.Writer, r Report) error {
	width := 0
	for _, c := range r.Checks {
		width = max(width, utf8.RuneCountInString(c.Name))
	}
	var b strings.Builder
	for _, c := range r.Checks {
		sym, ok := symbols[c.Status]
		if !ok {
			sym = "?"
		}
		fmt.Fprintf(&b, "%s %-*s  %s", sym, width, c.Name, c.Detail)
		if c.Hint != "" {
			fmt.Fprintf(&b, "  → %s", c.Hint)
		}
		b.WriteByte('\n')
	}
	verdict := "ok"
	if !r.OK {
		verdict = "FAILED"
	}
	s := r.Summary
	fmt.Fprintf(&b, "%s: %d passed, %d %s, %d failed, %d skipped\n",
		verdict, s.Pass, s.Warn, plural(s.Warn, "warning", "warnings"), s.Fail, s.Skip)
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// WriteJSON writes r as one indented JSON object.
func WriteJSON(w io.Writer, r Report) error {
	if r.Checks == nil {
		r.Checks = []Result{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
