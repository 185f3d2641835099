# bench/latency.gp: the latency distributions of bench/bench_grpc as CDFs,
# ap against the raw gRPC core baseline of the same run.
#
#   bench/bench_grpc --samples DIR
#   gnuplot -e "dir='DIR'; out='bench/latency.png'" bench/latency.gp
#
# (`make bench-plot BENCH_SAMPLES=DIR` runs the second line.) Each DIR/*.dat
# holds "latency_ms quantile" lines, sorted, as bench_grpc writes them.
if (!exists("dir")) dir = 'bench-samples'
if (!exists("out")) out = 'bench/latency.png'

set terminal pngcairo size 1400,560 font "sans,11"
set output out
set multiplot layout 1,2 title "ap vs raw gRPC core (bench/raw\\_server), same run, 2 cores, loopback"

set logscale x
set xlabel "latency (ms, log scale)"
set ylabel "fraction of samples at or below"
set yrange [0:1]
set xrange [0.05:20]
set ytics 0.1
set grid xtics ytics mxtics
set key bottom right

f(name) = sprintf("%s/%s.dat", dir, name)

set title "open stream -> first message (ap: reconnect -> first task)"
plot f("raw_reconnect") using 1:2 with lines lw 2 lc rgb "#1f77b4" title "raw, one connection", \
     f("ap_reconnect") using 1:2 with lines lw 2 lc rgb "#d62728" title "ap, one connection", \
     f("raw_reconnect_newconn") using 1:2 with lines lw 2 dt 2 lc rgb "#1f77b4" title "raw, new connection", \
     f("ap_reconnect_newconn") using 1:2 with lines lw 2 dt 2 lc rgb "#d62728" title "ap, new connection"

set title "failover: owner gone -> the other operator has the task"
plot f("raw_failover_cancel") using 1:2 with lines lw 2 lc rgb "#1f77b4" title "raw, stream cancelled", \
     f("ap_failover_cancel") using 1:2 with lines lw 2 lc rgb "#d62728" title "ap, stream cancelled", \
     f("raw_failover_kill") using 1:2 with lines lw 2 dt 2 lc rgb "#1f77b4" title "raw, process SIGKILLed", \
     f("ap_failover_kill") using 1:2 with lines lw 2 dt 2 lc rgb "#d62728" title "ap, process SIGKILLed"

unset multiplot
