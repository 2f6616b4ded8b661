#!/usr/bin/env bash
# What a daemon costs at rest-of-the-lab scale, measured from outside with the release binaries:
# N simulated EA PSB supplies (separate processes, real Modbus TCP), a hub, `cyclerd run` with
# one channel per supply polled at 10 Hz with every poll stored (`record: every 0.1 s`,
# sync = full), a test running on every channel. The daemon's CPU (utime + stime from
# /proc) and RSS are read over a steady window after the tests started; repeated, median with
# min and max. With PAGES=N (default 50; 0 skips it) a second window follows with N monitor pages
# open, each a client of the monitor's event stream (`GET /events`, every channel), and the
# daemon's CPU then is reported against the first window's. Linux only.
#
#   cargo build --release -p cyclerd-cli --bin cyclerd --bin cyclerctl -p cyclerhub --bin cyclerhub
#   scripts/bench-acquisition.sh [CHANNELS=64] [SECONDS=20] [REPEATS=3]
#   PROFILE=/tmp/acq.perf scripts/bench-acquisition.sh 64 10 1   # and a perf profile of the window
set -euo pipefail
channels=${1:-64}
seconds=${2:-20}
repeats=${3:-3}
bin=${BIN:-target/release}
for b in cyclerd cyclerctl cyclerhub; do
    [[ -x $bin/$b ]] || { echo "build the release binaries first ($bin/$b missing)" >&2; exit 1; }
done
tick=$(getconf CLK_TCK)
pages=${PAGES:-50}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# A counter of the daemon's /metrics (0 when it cannot be read).
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m || $1 == m "_total" { v = $2 } END { print v + 0 }'; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

one_run() {
    local dir pids=() base hubport ctlport webport
    dir=$(mktemp -d /tmp/cyclerd-bench-acq.XXXXXX)
    base=$((20000 + RANDOM % 20000))
    hubport=$((base + 1000)); ctlport=$((base + 1001)); webport=$((base + 1002))
    "$bin/cyclerhub" serve --db "$dir/hub.sqlite" --listen "127.0.0.1:$hubport" --no-http >"$dir/hub.log" 2>&1 &
    pids+=($!)
    {
        printf '[daemon]\nname = "bench"\n[store]\npath = "%s/outbox.sqlite"\ncommit_interval_ms = 250\nsync = "full"\n' "$dir"
        printf '[hub]\naddress = "http://127.0.0.1:%s"\n[control]\nlisten = "127.0.0.1:%s"\n[web]\nlisten = "127.0.0.1:%s"\n' "$hubport" "$ctlport" "$webport"
        printf '[limits]\nvoltage_min = 2.5\nvoltage_max = 4.25\ncurrent_max = 10.0\ntemperature_max = 60.0\n'
    } >"$dir/cyclerd.toml"
    for k in $(seq 1 "$channels"); do
        "$bin/cyclerd" sim ea-psb --listen "127.0.0.1:$((base + k))" --serial "SIM$k" --soc 0.3 >/dev/null 2>&1 &
        pids+=($!)
        printf '[[device]]\nname = "psb%s"\nfamily = "ea-psb"\naddress = "127.0.0.1:%s"\n[[channel]]\nid = "psb%s/1"\npoll_interval_ms = 100\n' \
            "$k" "$((base + k))" "$k" >>"$dir/cyclerd.toml"
    done
    cat >"$dir/slow.yaml" <<'EOF'
protocol: Slow charge, every poll stored
version: 1
params: {capacity: 2.5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
record: {every: 0.1 s}
steps:
  - "Charge at C/20 until 4.1 V"
EOF
    sleep 1
    "$bin/cyclerd" run --config "$dir/cyclerd.toml" >"$dir/cyclerd.log" 2>&1 &
    local daemon=$!
    pids+=($daemon)
    local up=
    for _ in $(seq 1 100); do
        "$bin/cyclerctl" status --daemon "http://127.0.0.1:$ctlport" >/dev/null 2>&1 && { up=1; break; }
        sleep 0.1
    done
    if [[ -z $up ]]; then
        echo "cyclerd did not start; its log:" >&2
        cat "$dir/cyclerd.log" >&2
        kill "${pids[@]}" 2>/dev/null || true
        exit 1
    fi
    for k in $(seq 1 "$channels"); do
        "$bin/cyclerctl" start --daemon "http://127.0.0.1:$ctlport" "psb$k/1" --protocol "$dir/slow.yaml" \
            --meta cell_id="cell$k" --meta operator=bench --meta owner=bench --meta objective=bench \
            --meta chemistry=NMC --meta nominal_capacity_ah=2.5 >/dev/null
    done
    sleep 3
    local t0 c0 t1 c1
    t0=$(date +%s.%N); c0=$(cpu_ticks "$daemon")
    local a0 k0 a1 k1
    a0=$(metric "$webport" cyclerd_samples_acquired); k0=$(metric "$webport" cyclerd_samples_acknowledged)
    if [[ -n ${PROFILE:-} ]]; then
        # A CPU profile of the daemon over the window (software clock: works in VMs).
        perf record -q -e cpu-clock -F 1999 ${PERF_CALLGRAPH:--g} -p "$daemon" -o "$PROFILE" -- sleep "$seconds" >/dev/null 2>&1
    else
        sleep "$seconds"
    fi
    t1=$(date +%s.%N); c1=$(cpu_ticks "$daemon")
    a1=$(metric "$webport" cyclerd_samples_acquired); k1=$(metric "$webport" cyclerd_samples_acknowledged)
    # The window counts only if every poll was stored and reached the hub.
    awk -v a="$((a1 - a0))" -v k="$((k1 - k0))" -v t0="$t0" -v t1="$t1" -v n="$channels" 'BEGIN {
        want = n * 10 * (t1 - t0)
        printf "window: %.0f samples/s acquired, %.0f/s acknowledged by the hub (every poll: %.0f/s)\n", a / (t1 - t0), k / (t1 - t0), n * 10 > "/dev/stderr"
        if (a < 0.97 * want || k < 0.9 * want) { print "not every poll was stored and acknowledged" > "/dev/stderr"; exit 1 }
    }' || { kill "${pids[@]}" 2>/dev/null; exit 1; }
    local rss
    rss=$(rss_kb "$daemon")
    # The same lab watched by monitor pages: each holds the event stream of every channel.
    local p0=0 p1=0 q0=0 q1=0 viewers=()
    if (( pages > 0 )); then
        for _ in $(seq 1 "$pages"); do
            curl -sN "http://127.0.0.1:$webport/events" >/dev/null 2>&1 &
            viewers+=($!)
        done
        sleep 2
        p0=$(date +%s.%N); q0=$(cpu_ticks "$daemon")
        sleep "$seconds"
        p1=$(date +%s.%N); q1=$(cpu_ticks "$daemon")
        local alive=0
        for v in "${viewers[@]}"; do kill -0 "$v" 2>/dev/null && alive=$((alive + 1)); done
        (( alive == pages )) || echo "only $alive of $pages monitor pages stayed open" >&2
        kill "${viewers[@]}" 2>/dev/null || true
    fi
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v tick="$tick" -v rss="$rss" \
        -v q0="$q0" -v q1="$q1" -v p0="$p0" -v p1="$p1" \
        'BEGIN { printf "%.3f %.1f %.3f\n", 100 * (c1 - c0) / tick / (t1 - t0), rss / 1024,
                 (p1 > p0) ? 100 * (q1 - q0) / tick / (p1 - p0) : 0 }'
    rm -rf "$dir"
}

results=()
for r in $(seq 1 "$repeats"); do
    line=$(one_run)
    read -r cpu rss cpu_pages <<<"$line"
    echo "run $r: daemon CPU $cpu % of a core, RSS $rss MB; with $pages monitor pages $cpu_pages %" >&2
    results+=("$line")
done
# One row each for CPU and RSS, as the benches' rows (scripts/bench_table.rs): printed, and
# appended to $BENCH_TABLE_TSV when set.
row() { # what unit goal_op goal column
    printf '%s\n' "${results[@]}" | awk -v col="$5" '{ print $col }' | sort -n | awk \
        -v what="$1" -v unit="$2" -v op="$3" -v goal="$4" -v table="${BENCH_TABLE_TSV:-}" '
        { v[NR] = $1 }
        END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            met = (op == "<=") ? (m <= goal) : (m >= goal)
            measured = sprintf("%.2f (%.2f-%.2f, n=%d)", m, v[1], v[NR], NR)
            line = sprintf("daemon\t%s\t%s\t%s\t-\t-\t-\t%s %s %s\t%s", what, measured, unit, op, goal, unit, met ? "yes" : "NO")
            print line
            if (table != "") print line >> table
        }'
}
row "$channels PSB channels at 10 Hz, every poll stored, sync full: CPU" "% of a core" "<=" 2 1
row "$channels PSB channels at 10 Hz: resident memory" "MB" "<=" 30 2
if (( pages > 0 )); then
    # CPU with the pages open, against the same runs' CPU without them.
    printf '%s\n' "${results[@]}" | awk -v what="$channels channels at 10 Hz watched by $pages monitor pages: CPU" \
        -v table="${BENCH_TABLE_TSV:-}" '
        function median(a, n,   i, j, t) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        { base[NR] = $1; with[NR] = $3; lo = (NR == 1 || $3 < lo) ? $3 : lo; hi = (NR == 1 || $3 > hi) ? $3 : hi
          blo = (NR == 1 || $1 < blo) ? $1 : blo; bhi = (NR == 1 || $1 > bhi) ? $1 : bhi }
        END {
            m = median(with, NR); b = median(base, NR)
            line = sprintf("daemon\t%s\t%.2f (%.2f-%.2f, n=%d)\t%% of a core\tthe same daemon with no page open\t%.2f (%.2f-%.2f)\t%.2f\t-\t-", what, m, lo, hi, NR, b, blo, bhi, (b > 0) ? m / b : 0)
            print line
            if (table != "") print line >> table
        }'
fi
