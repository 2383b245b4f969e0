package main

import "testing"

// TestFlowFlags: the chart passes --flows-ring-size and --flows-addr and sets
// POD_NAME (and may set NODE_IP); the defaults are what the flag help says.
func TestFlowFlags(t *testing.T) {
	t.Setenv("POD_NAME", "weft-agent-abcde")
	t.Setenv("NODE_IP", "10.0.0.7")
	f := newCommand().Flags()
	for name, want := range map[string]string{
		"flows-ring-size": "4096",
		"flows-addr":      ":4244",
		"pod-name":        "weft-agent-abcde",
		"node-ip":         "10.0.0.7",
	} {
		fl := f.Lookup(name)
		if fl == nil {
			t.Errorf("no --%s flag", name)
			continue
		}
		if fl.DefValue != want {
			t.Errorf("--%s default = %q, want %q", name, fl.DefValue, want)
		}
	}
	if err := f.Parse([]string{"--flows-ring-size=100", "--flows-addr="}); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.GetInt("flows-ring-size"); v != 100 {
		t.Errorf("--flows-ring-size=100 parsed as %d", v)
	}
	if v, _ := f.GetString("flows-addr"); v != "" {
		t.Errorf("--flows-addr= parsed as %q, want \"\" (off)", v)
	}
}
