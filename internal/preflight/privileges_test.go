package preflight

import (
	"strings"
	"testing"
)

func TestParseCapEff(t *testing.T) {
	tests := []struct {
		name, status string
		want         uint64
		wantErr      bool
	}{
		{name: "root", status: "Name:\tweft\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n", want: 0x1ffffffffff},
		{name: "none", status: "CapEff:\t0000000000000000\n", want: 0},
		{name: "missing", status: "Name:\tweft\n", wantErr: true},
		{name: "bad hex", status: "CapEff:\tzz\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCapEff(strings.NewReader(tt.status))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseCapEff(%q) = %#x, %v; want %#x, error %v", tt.status, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestCheckPrivileges(t *testing.T) {
	const (
		netAdmin = 1 << capNetAdmin
		sysAdmin = 1 << capSysAdmin
		bpf      = 1 << capBPF
	)
	tests := []struct {
		name       string
		capEff     uint64
		euid       int
		want       Status
		wantDetail string
	}{
		{name: "root", capEff: 0x1ffffffffff, euid: 0, want: StatusPass, wantDetail: "uid 0, effective CAP_BPF CAP_NET_ADMIN CAP_SYS_ADMIN"},
		{name: "exactly the three", capEff: netAdmin | sysAdmin | bpf, euid: 1000, want: StatusPass, wantDetail: "uid 1000, effective CAP_BPF CAP_NET_ADMIN CAP_SYS_ADMIN"},
		{name: "sys admin covers bpf", capEff: netAdmin | sysAdmin, euid: 0, want: StatusPass, wantDetail: "uid 0, effective CAP_BPF (via CAP_SYS_ADMIN) CAP_NET_ADMIN CAP_SYS_ADMIN"},
		{name: "unprivileged", capEff: 0, euid: 1000, want: StatusFail, wantDetail: "uid 1000 lacks CAP_BPF CAP_NET_ADMIN CAP_SYS_ADMIN (CapEff 0x0)"},
		{name: "root in a restricted container", capEff: bpf | netAdmin, euid: 0, want: StatusFail, wantDetail: "uid 0 lacks CAP_SYS_ADMIN (CapEff 0x8000001000)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkPrivileges(tt.capEff, tt.euid)
			if got.Status != tt.want || got.Detail != tt.wantDetail {
				t.Errorf("checkPrivileges(%#x, %d) = %+v; want status %s, detail %q", tt.capEff, tt.euid, got, tt.want, tt.wantDetail)
			}
		})
	}
}
