# bench/report.sh: the results table of bench/run (markdown, printed and
# written to bench/results/<stamp>.md) and its chart (<stamp>.png).
# Sourced by bench/run; reads the key=value file $R through get().

# pass/miss of a comparison; "n/a" when a figure is missing.
judge() {	# judge <value> <op> <limit>
	[ -z "$1" ] || [ "$1" = timeout ] && { echo "n/a"; return; }
	awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN {
		ok = (op == ">=") ? (v + 0 >= l + 0) : (v + 0 <= l + 0)
		print ok ? "pass" : "miss" }'
}
both() { [ "$1" = pass ] && [ "$2" = pass ] && echo pass || { [ "$1" = n/a ] || [ "$2" = n/a ] && echo n/a || echo miss; }; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && [ "$1" != timeout ] && [ "$2" != timeout ] &&
	awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b }'; }

report() {
	local stamp md png
	stamp=$(date +%Y%m%d-%H%M%S)
	mkdir -p "$RESULTS_DIR"
	md=$RESULTS_DIR/$stamp.md
	png=$RESULTS_DIR/$stamp.png

	local r1 r1b r3 r4 r6 j
	{
	echo "# delq bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "$(nproc) cores, load average before the run $LOAD_BEFORE; PostgreSQL $(q -c 'SHOW server_version'), synchronous_commit = on;"
	echo "delq.batch_size = $BATCH_SIZE, delq.max_in_flight = $MAX_IN_FLIGHT, concurrency = $CONCURRENCY"
	echo "(fan-out: $FANOUT_CONCURRENCY per destination); nginx $NGINX_WORKERS worker(s), wrk $WRK_THREADS thread(s)."
	echo "delq: $PGBIN/../lib/delq.so md5 $(md5sum "$(q -c "SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'")/delq.so" | cut -c1-12), tree $(git -C "$HERE" describe --always --dirty 2>/dev/null)."
	echo
	echo "| # | measure | delq | reference, same run | ratio | target | result |"
	echo "|---|---|---|---|---|---|---|"
	if [ -n "$(get tput_rate)" ]; then
		r1=$(ratio "$(get tput_rate)" "$(get wrk_ka)")
		j=$(both "$(judge "$r1" '>=' 0.15)" "$(judge "$(get tput_rate)" '>=' 10000)")
		echo "| 1 | forwarding throughput, deliveries/s ($(get tput_n) in $(get tput_s) s) | $(get tput_rate) | wrk keep-alive ceiling, $(get wrk_c) conns: $(get wrk_ka) req/s | $r1 | >= 0.15 and >= 10,000/s | $j |"
	fi
	if [ -n "$(get lat_idle_n)" ]; then
		echo "| 2 | latency into an idle worker ($(get lat_idle_n) requests), ms | wire p50 $(get lat_idle_wire_p50), p99 $(get lat_idle_wire_p99); confirmed p50 $(get lat_idle_conf_p50), p99 $(get lat_idle_conf_p99) | | | (p50 <= 10, p99 <= 100) | $(both "$(judge "$(get lat_idle_conf_p50)" '<=' 10)" "$(judge "$(get lat_idle_conf_p99)" '<=' 100)") |"
		j=$(both "$(both "$(judge "$(get lat_load_wire_p50)" '<=' 10)" "$(judge "$(get lat_load_wire_p99)" '<=' 100)")" \
			"$(both "$(judge "$(get lat_load_conf_p50)" '<=' 10)" "$(judge "$(get lat_load_conf_p99)" '<=' 100)")")
		echo "| 2 | latency under $(get lat_load_rate) submits/s ($(get lat_load_n) requests), ms | wire p50 $(get lat_load_wire_p50), p99 $(get lat_load_wire_p99); confirmed p50 $(get lat_load_conf_p50), p99 $(get lat_load_conf_p99) (max $(get lat_load_conf_max)) | idle: confirmed p50 $(get lat_idle_conf_p50), p99 $(get lat_idle_conf_p99) | | p50 <= 10, p99 <= 100 | $j |"
	fi
	if [ -n "$(get submit_tps)" ]; then
		r3=$(ratio "$(get submit_tps)" "$(get insert_tps)")
		echo "| 3 | delq.submit, TPS ($SUBMIT_CLIENTS clients; runs $(get submit_runs)) | $(get submit_tps) | plain INSERT, same row: $(get insert_tps) (runs $(get insert_runs)) | $r3 | >= 0.8 | $(judge "$r3" '>=' 0.8) |"
	fi
	if [ -n "$(get claim_large_ms)" ]; then
		r4=$(ratio "$(get claim_large_ms)" "$(get claim_small_ms)")
		echo "| 4 | claim, ms per batch of $BATCH_SIZE at $CLAIM_DEPTH queued ($CLAIM_NOT_DUE not due) | $(get claim_large_ms) | at $CLAIM_SMALL queued: $(get claim_small_ms) | $r4 | <= 1.5 | $(judge "$r4" '<=' 1.5) |"
	fi
	if [ -n "$(get rss_growth_kb)" ]; then
		echo "| 5 | worker RSS growth across $(get rss_n) deliveries, kB (private: anon + file) | $(get rss_private_growth_kb) | VmRSS $(get rss_before_kb) -> $(get rss_after_kb) (+$(get rss_growth_kb), of which shared buffers +$(get rss_shmem_growth_kb)) | | <= 10240 | $(judge "$(get rss_private_growth_kb)" '<=' 10240) |"
		echo "| 5 | worker CPU while idle, % of a core over ${IDLE_CPU_SECONDS} s | $(get idle_cpu_pct) | $(get idle_cpu_ticks) ticks | | about 0 (<= 0.5) | $(judge "$(get idle_cpu_pct)" '<=' 0.5) |"
		[ -n "$(get parked_cpu_pct)" ] && echo "| 5 | worker CPU while idle beside 10,000 due deliveries of a disabled destination, % of a core | $(get parked_cpu_pct) | empty queue: $(get idle_cpu_pct) | | about 0 (<= 0.5) | $(judge "$(get parked_cpu_pct)" '<=' 0.5) |"
	fi
	if [ -n "$(get fan_none)" ]; then
		r6=$(ratio "$(get fan_down)" "$(get fan_none)")
		echo "| 6 | fan-out, deliveries/s per healthy destination, 1 of 10 down ($FANOUT_DOWN) | $(get fan_down) | none down: $(get fan_none) | $r6 | >= 0.8 | $(judge "$r6" '>=' 0.8) |"
	fi
	if [ -n "$(get wrk_close)" ]; then
		r1b=$(awk -v r="$(get tput_reqs)" -v c="$(get tput_conns)" 'BEGIN { if (c < 1) c = 1; printf "%.0f", r / c }')
		echo "| 7 | sink with \`Connection: close\`, req/s | delq: $(get tput_reqs) requests over $(get tput_conns) new connections ($r1b per connection) | wrk close: $(get wrk_close); keep-alive: $(get wrk_ka) | $(ratio "$(get wrk_close)" "$(get wrk_ka)") | (reference) | |"
	fi
	echo
	if [ -n "$(get cpu_worker)" ]; then
		echo "CPU during section 1 (fill + drain, % of one core): delq worker $(get cpu_worker), whole cluster $(get cpu_cluster) (worker included), nginx $(get cpu_nginx), machine $(get cpu_machine) of $(( $(nproc) * 100 ))."
		echo "Filling the queue took $(get tput_fill_s) s of that; the worker used $(get tput_worker_us) µs of CPU and wrote $(get tput_wal_bytes) bytes of WAL per delivery."
	fi
	[ "$(get worker_exits)" != 0 ] && echo "The delq worker exited $(get worker_exits) time(s) during the run (restarted by the launcher); server errors: $(tr '\n' ';' <"$B/errors.txt")"
	[ -n "$(get fan_down_states)" ] && echo "Down destination's deliveries at the end: $(get fan_down_states)"
	[ -n "$(get claim_fill_s)" ] && echo "Filling the claim queue to $CLAIM_DEPTH took $(get claim_fill_s) s."
	if [ -s "$B/profile_throughput.txt" ]; then
		echo
		echo "Top statements during section 1 (pg_stat_statements, track = all): calls | total ms | ms/call | rows | query"
		echo '```'
		cat "$B/profile_throughput.txt"
		echo '```'
	fi
	if [ -s "$B/explain_claim_large.txt" ]; then
		echo
		echo "EXPLAIN ANALYZE of _claim at depth $CLAIM_DEPTH:"
		echo '```'
		cat "$B/explain_claim_large.txt"
		echo '```'
	fi
	} >"$md"
	cat "$md"
	chart "$png"
	cp "$md" "$RESULTS_DIR/latest.md"
	[ -s "$png" ] && cp "$png" "$RESULTS_DIR/latest.png"
	say "written: $md $png"
}

# Four panels: throughput against the sink, latency against the targets,
# the ratios against theirs, and the worker's RSS over section 5.
chart() {
	local png=$1 d=$B/chart
	mkdir -p "$d"
	cat >"$d/tput.dat" <<EOF
"delq" $(get tput_rate)
"wrk keep-alive" $(get wrk_ka)
"wrk close" $(get wrk_close)
"target" 10000
EOF
	cat >"$d/lat.dat" <<EOF
"idle wire" $(get lat_idle_wire_p50) $(get lat_idle_wire_p99)
"idle confirmed" $(get lat_idle_conf_p50) $(get lat_idle_conf_p99)
"load wire" $(get lat_load_wire_p50) $(get lat_load_wire_p99)
"load confirmed" $(get lat_load_conf_p50) $(get lat_load_conf_p99)
EOF
	cat >"$d/ratio.dat" <<EOF
"1 delq/ceiling" $(ratio "$(get tput_rate)" "$(get wrk_ka)") 0.15
"3 submit/INSERT" $(ratio "$(get submit_tps)" "$(get insert_tps)") 0.8
"4 claim 1M/10k" $(ratio "$(get claim_large_ms)" "$(get claim_small_ms)") 1.5
"6 fan-out down/none" $(ratio "$(get fan_down)" "$(get fan_none)") 0.8
EOF
	# empty values would shift the columns: NaN marks them
	sed -i -E 's/" ( |$)/" NaN /; s/  +/ NaN /g; s/ $//' "$d"/*.dat
	[ -s "$B/rss.dat" ] || echo "0 0 0 0 0" >"$B/rss.dat"
	gnuplot >"$d/gnuplot.log" 2>&1 <<EOF
set terminal pngcairo size 1400,1000 font "sans,10"
set output "$png"
set multiplot layout 2,2 title "delq bench $(date -u '+%Y-%m-%d %H:%M UTC')"
set style data histograms
set style fill solid 0.7 border -1
set boxwidth 0.8
set grid ytics
set title "1, 7: deliveries or requests per second"
set logscale y
set yrange [100:*]
plot "$d/tput.dat" using 2:xtic(1) title "" lc rgb "#3b7dd8"
unset logscale y
set title "2: latency, ms (log; targets 10 and 100)"
set logscale y
set yrange [0.5:*]
set style histogram clustered gap 1
plot "$d/lat.dat" using 2:xtic(1) title "p50", "" using 3 title "p99", 10 with lines dt 2 lc rgb "black" title "", 100 with lines dt 2 lc rgb "black" title ""
unset logscale y
set title "3, 4, 6, 1: ratios (bars) and their targets (points)"
set yrange [0:*]
set style histogram clustered gap 1
plot "$d/ratio.dat" using 2:xtic(1) title "measured" lc rgb "#3b7dd8", "" using 0:3 with points pt 7 ps 2 lc rgb "red" title "target"
set style data lines
set title "5: delq worker memory during section 5, MB"
set xlabel "s"
set yrange [0:*]
plot "$B/rss.dat" using 1:(\$2/1024) title "VmRSS" lw 2, "" using 1:((\$3+\$4)/1024) title "anon + file" lw 2, "" using 1:(\$5/1024) title "shared (buffers)" lw 2
unset multiplot
EOF
}
