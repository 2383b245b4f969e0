package preflight

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestNewReport(t *testing.T) {
	tests := []struct {
		name     string
		statuses []Status
		want     Summary
		wantCode int
	}{
		{name: "empty", wantCode: 0},
		{name: "all pass", statuses: []Status{StatusPass, StatusPass}, want: Summary{Pass: 2}, wantCode: 0},
		{name: "warnings and skips do not fail", statuses: []Status{StatusPass, StatusWarn, StatusSkip}, want: Summary{Pass: 1, Warn: 1, Skip: 1}, wantCode: 0},
		{name: "one failure fails", statuses: []Status{StatusPass, StatusFail, StatusWarn}, want: Summary{Pass: 1, Warn: 1, Fail: 1}, wantCode: 1},
		{name: "unknown status fails", statuses: []Status{"bogus"}, want: Summary{Fail: 1}, wantCode: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rs []Result
			for _, s := range tt.statuses {
				rs = append(rs, Result{Name: "x", Status: s})
			}
			r := NewReport(rs)
			if r.Summary != tt.want || r.ExitCode() != tt.wantCode || r.OK != (tt.wantCode == 0) {
				t.Errorf("NewReport(%v) = summary %+v, OK %v, exit %d; want %+v, exit %d", tt.statuses, r.Summary, r.OK, r.ExitCode(), tt.want, tt.wantCode)
			}
		})
	}
}

var sampleReport = NewReport([]Result{
	{Name: "kernel", Status: StatusPass, Detail: "kernel 6.18.44"},
	{Name: "cgroup2", Status: StatusPass, Detail: "cgroup2 at /sys/fs/cgroup/unified (hybrid host)"},
	{Name: "bpffs", Status: StatusFail, Detail: "/sys/fs/bpf is on sysfs (magic 0x62656572), not a bpffs", Hint: "mount -t bpf bpf /sys/fs/bpf"},
	{Name: "networkpolicy", Status: StatusWarn, Detail: "1 would block TCP 15008 (HBONE): shop/web (ingress)", Hint: "add TCP port 15008"},
	{Name: "tcx", Status: StatusSkip, Detail: "not probed: operation not permitted", Hint: "run as root"},
})

func TestWriteText(t *testing.T) {
	tests := []struct {
		name   string
		report Report
		want   string
	}{
		{
			name:   "mixed",
			report: sampleReport,
			want: `✔ kernel         kernel 6.18.44
✔ cgroup2        cgroup2 at /sys/fs/cgroup/unified (hybrid host)
✘ bpffs          /sys/fs/bpf is on sysfs (magic 0x62656572), not a bpffs  → mount -t bpf bpf /sys/fs/bpf
! networkpolicy  1 would block TCP 15008 (HBONE): shop/web (ingress)  → add TCP port 15008
- tcx            not probed: operation not permitted  → run as root
FAILED: 2 passed, 1 warning, 1 failed, 1 skipped
`,
		},
		{
			name:   "all pass",
			report: NewReport([]Result{{Name: "btf", Status: StatusPass, Detail: "/sys/kernel/btf/vmlinux (5.3 MiB)"}}),
			want: `✔ btf  /sys/kernel/btf/vmlinux (5.3 MiB)
ok: 1 passed, 0 warnings, 0 failed, 0 skipped
`,
		},
		{
			name:   "unknown status",
			report: NewReport([]Result{{Name: "x", Status: "odd", Detail: "?"}}),
			want:   "? x  ?\nFAILED: 0 passed, 0 warnings, 1 failed, 0 skipped\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := WriteText(&b, tt.report); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("WriteText =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestWriteJSON(t *testing.T) {
	tests := []struct {
		name   string
		report Report
		want   string
	}{
		{
			name:   "one of each kind",
			report: NewReport(sampleReport.Checks[1:3]),
			want: `{
  "ok": false,
  "summary": {
    "pass": 1,
    "warn": 0,
    "fail": 1,
    "skip": 0
  },
  "checks": [
    {
      "name": "cgroup2",
      "status": "pass",
      "detail": "cgroup2 at /sys/fs/cgroup/unified (hybrid host)"
    },
    {
      "name": "bpffs",
      "status": "fail",
      "detail": "/sys/fs/bpf is on sysfs (magic 0x62656572), not a bpffs",
      "hint": "mount -t bpf bpf /sys/fs/bpf"
    }
  ]
}
`,
		},
		{
			name:   "no checks is an empty list",
			report: NewReport(nil),
			want:   "{\n  \"ok\": true,\n  \"summary\": {\n    \"pass\": 0,\n    \"warn\": 0,\n    \"fail\": 0,\n    \"skip\": 0\n  },\n  \"checks\": []\n}\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := WriteJSON(&b, tt.report); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("WriteJSON =\n%s\nwant\n%s", got, tt.want)
			}
			var back Report
			if err := json.Unmarshal([]byte(b.String()), &back); err != nil || back.OK != tt.report.OK || len(back.Checks) != len(tt.report.Checks) {
				t.Errorf("json.Unmarshal(WriteJSON) = %+v, %v; want the report back", back, err)
			}
		})
	}
}
