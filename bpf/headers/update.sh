#!/usr/bin/env bash
# Refresh the vendored BPF headers (STYLE.md "What weft adopts" 3).
#
#   vmlinux.h        bpftool btf dump of the running kernel's BTF
#                    (/sys/kernel/btf/vmlinux). The programs only use UAPI
#                    types (context structs, enums), which do not change
#                    between kernels, so any 6.x kernel with BTF will do.
#   bpf_helpers.h, bpf_helper_defs.h, bpf_endian.h
#                    copied from Debian's libbpf-dev (/usr/include/bpf),
#                    license headers kept (LGPL-2.1 OR BSD-2-Clause).
#
# Needs: apt-get install -y bpftool libbpf-dev
# Run from anywhere; writes next to this script. Then run `go generate
# ./bpf/...` and commit headers and generated output together.
set -euo pipefail
cd "$(dirname "$0")"

btf=${BTF:-/sys/kernel/btf/vmlinux}
command -v bpftool >/dev/null || { echo "bpftool not found (apt-get install -y bpftool)" >&2; exit 1; }
[ -r "$btf" ] || { echo "no BTF at $btf" >&2; exit 1; }

bpftool btf dump file "$btf" format c > vmlinux.h.tmp
mv vmlinux.h.tmp vmlinux.h

src=${LIBBPF_INCLUDE:-/usr/include/bpf}
for f in bpf_helpers.h bpf_helper_defs.h bpf_endian.h; do
	[ -r "$src/$f" ] || { echo "missing $src/$f (apt-get install -y libbpf-dev)" >&2; exit 1; }
	cp "$src/$f" "$f"
done

{
	echo "# Provenance of the vendored headers (written by update.sh)."
	echo "vmlinux.h: bpftool $(bpftool version 2>/dev/null | head -n1 | awk '{print $2}') from the BTF of kernel $(uname -r)"
	echo "libbpf headers: libbpf-dev $(dpkg-query -W -f='${Version}' libbpf-dev 2>/dev/null || echo unknown)"
} > VERSIONS
