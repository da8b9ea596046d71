# Draws task_correlation's CSV like the MMoE paper's figure 4: test loss per epoch, one panel per p.
# Usage: gnuplot -e "csv='task_correlation.csv'; png='task_correlation.png'" tools/plot_task_correlation.gp
if (!exists("csv")) csv = 'task_correlation.csv'
if (!exists("png")) png = 'task_correlation.png'
set terminal pngcairo size 1500,460 font ",11"
set output png
set datafile separator ","
set key top right
set grid
set logscale y
set xlabel "epoch"
set ylabel "test loss (mean MSE of the two tasks)"
set multiplot layout 1,3 title "Task correlation experiment (MMoE paper, fig. 4): mean over seeds"
ps = "0.5 0.9 1.0"
do for [i=1:3] {
    set title sprintf("correlation p = %s", word(ps, i))
    c = 1 + 3 * (i - 1)
    plot csv using 1:(column(c + 1)) with lines lw 2 title "shared-bottom", \
         csv using 1:(column(c + 2)) with lines lw 2 title "OMoE", \
         csv using 1:(column(c + 3)) with lines lw 2 title "MMoE"
}
unset multiplot
