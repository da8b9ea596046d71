# Draws task_correlation's output like the MMoE paper's figures 4 and 5: top row, the mean training
# loss per epoch for each correlation p; bottom row, histograms of every run's final training loss.
# Usage: gnuplot -e "prefix='build/papers/task_correlation'" tools/plot_task_correlation.gp
#        (reads PREFIX.csv and PREFIX_final.csv, writes PREFIX.png)
if (!exists("prefix")) prefix = 'task_correlation'
curves = prefix . '.csv'
finals = prefix . '_final.csv'
set terminal pngcairo size 1500,900 font ",11"
set output prefix . '.png'
set datafile separator ","
set grid
set multiplot layout 2,3 title "Task correlation experiment (MMoE paper, figures 4 and 5)"
ps = "0.5 0.9 1.0"
models = "shared-bottom OMoE MMoE"
set key top right
do for [i=1:3] {
    set title sprintf("p = %s: mean training loss over the runs", word(ps, i))
    set xlabel "epoch"
    set ylabel "training loss (mean MSE of the two tasks)"
    set logscale y
    first = 1 + 3 * (i - 1)
    plot for [k=1:3] curves using 1:(column(first + k)) with lines lw 2 title word(models, k)
}
unset logscale y
binwidth = 0.0002  # the final losses of this protocol are about 0.007-0.012
bin(x) = binwidth * floor(x / binwidth) + binwidth / 2
set style fill transparent solid 0.45 noborder
set boxwidth binwidth
do for [i=1:3] {
    set title sprintf("p = %s: final training loss of each run", word(ps, i))
    set xlabel "final training loss"
    set ylabel "runs"
    first = 1 + 3 * (i - 1)
    plot for [k=1:3] finals using (bin(column(first + k))):(1.0) smooth frequency with boxes title word(models, k)
}
unset multiplot
