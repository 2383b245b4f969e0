package logflags

import "testing"

func TestNew(t *testing.T) {
	tests := []struct {
		name, format, level string
		wantErr             bool
	}{
		{name: "json info", format: "json", level: "info"},
		{name: "text debug, any case", format: "TEXT", level: "debug"},
		{name: "bad format", format: "xml", level: "info", wantErr: true},
		{name: "bad level", format: "json", level: "loud", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := New(tt.format, tt.level)
			if (err != nil) != tt.wantErr || (err == nil && l == nil) {
				t.Fatalf("New(%q, %q) = %v, %v; wantErr %v", tt.format, tt.level, l, err, tt.wantErr)
			}
		})
	}
}
