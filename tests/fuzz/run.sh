#!/bin/sh
# Run the libFuzzer targets that `make fuzz` built (see the fuzzing block of
# Makefile.am):
#
#   run.sh FUZZ_BUILD_DIR SRCDIR SECONDS NAME...
#
# Each target fuzz_NAME runs for SECONDS on a fresh copy of
# SRCDIR/tests/fuzz/corpus/NAME (the seed corpus is never written to),
# with SRCDIR/tests/fuzz/NAME.dict when there is one, and with the
# LeakSanitizer suppressions of SRCDIR/tests/fuzz/lsan.supp (a library's
# own leak). Everything it writes stays under FUZZ_BUILD_DIR/fuzz-out/NAME:
# the working corpus, the log and any crashing input (crashes/). The
# targets' own engines and files live in a temp dir that is removed after
# each run, crash or not.
#
# Prints one line per target with the executions it ran (libFuzzer's final
# stat::number_of_executed_units); for a target that crashed, the tail of
# its log and the path of the saved input. Exits 1 when any target failed.
set -u

if [ $# -lt 4 ]; then
	echo "usage: $0 FUZZ_BUILD_DIR SRCDIR SECONDS NAME..." >&2
	exit 2
fi
fb=$1
src=$2
seconds=$3
shift 3
names=$*

case $seconds in
'' | *[!0-9]*)
	echo "run.sh: FUZZ_SECONDS must be a whole number of seconds, not '$seconds'" >&2
	exit 2
	;;
esac

status=0
failed=
for name in $names; do
	bin=$fb/tests/fuzz/fuzz_$name
	out=$fb/fuzz-out/$name
	rm -rf "$out"
	mkdir -p "$out/corpus" "$out/crashes"
	if [ -d "$src/tests/fuzz/corpus/$name" ]; then
		cp "$src/tests/fuzz/corpus/$name"/* "$out/corpus/" 2>/dev/null || true
		chmod -R u+w "$out/corpus"
	fi
	set -- -max_total_time="$seconds" -print_final_stats=1 -timeout=30 \
		-rss_limit_mb=2048 -artifact_prefix="$out/crashes/"
	if [ -f "$src/tests/fuzz/$name.dict" ]; then
		set -- "$@" -dict="$src/tests/fuzz/$name.dict"
	fi
	# fuzz_node's engine keeps memory across inputs by design (the 5 minute
	# NotifyTriggers dedup window grows with every new trigger_request_id).
	# libFuzzer runs LeakSanitizer over the whole heap after each input that
	# keeps memory, which slows that target twentyfold within a minute; it
	# gets the leak check once, at exit, instead (a leak still fails it).
	if [ "$name" = node ]; then
		set -- "$@" -detect_leaks=0
	fi
	# Prefer tmpfs for the targets' databases (fuzz.h, fz_tmpdir).
	base=${TMPDIR:-/tmp}
	if [ -d /dev/shm ] && [ -w /dev/shm ]; then
		base=/dev/shm
	fi
	tmp=$(mktemp -d "$base/ap-fuzz-$name.XXXXXX") || exit 1
	AP_FUZZ_TMPDIR=$tmp LSAN_OPTIONS="suppressions=$src/tests/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}" \
		"$bin" "$@" "$out/corpus" </dev/null >"$out/log" 2>&1
	rc=$?
	rm -rf "$tmp"
	line=$(grep '^stat::number_of_executed_units:' "$out/log" | tail -n 1)
	execs=$(echo "$line" | sed 's/^stat::number_of_executed_units: *//')
	if [ "$rc" -eq 0 ] && [ -n "$line" ]; then
		echo "fuzz_$name: ${execs} executions in ${seconds} s, corpus $(ls "$out/corpus" | wc -l) inputs  ($line)"
		continue
	fi
	status=1
	failed="$failed fuzz_$name"
	echo "---- fuzz_$name: FAILED (exit $rc) after ${execs:-?} executions; last lines of $out/log ----"
	tail -n 60 "$out/log"
	echo "---- end of $out/log ----"
	found=
	for f in "$out/crashes"/*; do
		if [ -f "$f" ]; then
			echo "fuzz_$name: crashing input saved as $f"
			echo "fuzz_$name: reproduce with: $bin $f"
			found=1
		fi
	done
	if [ -z "$found" ]; then
		echo "fuzz_$name: no input was saved (a leak found at exit, or a failure outside an input)"
	fi
done
if [ "$status" -ne 0 ]; then
	echo "fuzz: failed:$failed"
fi
exit $status
