// Package procsample measures the resources used by each worker's process
// tree: the worker and every process below it, so that a Node worker that
// forks helpers (child_process, worker pools of processes, a headless
// browser) is judged by everything it started, as MAX_RSS and MAX_CPU
// require.
//
// # One pass per sample
//
// Sampler.Sample lists /proc once, reads /proc/<pid>/stat once for every
// process (stat alone carries the parent pid, the CPU times and the resident
// set, so /proc/<pid>/status is never opened), links each process to its
// parent and then walks down from each requested root. The cost therefore
// grows with the number of processes in the pid namespace, not with the number
// of workers times that number. The walking itself is done by aggregate, a
// pure function over a table of (pid, ppid, figures) rows, tested without
// /proc.
//
// # What is counted
//
//   - Memory: the sum of each live process's resident set (stat's rss field,
//     in pages, times the page size). Pages shared between processes of the
//     tree (copy-on-write after fork, shared libraries, shared memory) are
//     counted once per process that maps them, so the figure can exceed what
//     the tree really costs the container; it never understates it. Zombies
//     have no memory left and add nothing.
//   - CPU: user+system time of every live process of the tree, plus the
//     cutime+cstime of every live process of the tree. The second part is the
//     CPU of descendants that have already exited and been waited for: the
//     kernel adds a child's total (its own time and that of its own waited-for
//     descendants) to its parent's cutime/cstime when the parent reaps it.
//     Without it a worker that runs short-lived children (spawn, exec of a
//     converter, ...) would see that CPU vanish from the total the moment a
//     child exits, and the total would go down. Summing it over the whole live
//     tree, not just over the worker, also keeps the CPU of grandchildren that
//     a still-running child has reaped. Nothing is counted twice: a reaped
//     process is no longer live, so only the ancestor that waited for it
//     carries its time. Children that exit without being waited for
//     (SIGCHLD ignored, SA_NOCLDWAIT) are reaped by the kernel without
//     adding their time anywhere, and that CPU is lost.
//   - Procs: the processes of the tree, the root included; zombies that the
//     tree has not reaped yet count.
//
// # Orphans no longer count
//
// The tree is rebuilt from parent pids at each sample. A descendant whose
// parent exits is re-parented by the kernel to the nearest child subreaper
// (clusterinit itself, as PID 1 or subreaper) and from then on belongs to no
// worker: its memory and CPU leave the worker's figures (the CPU total can
// therefore go down; CPURatio reads a decrease as 0), and when clusterinit
// reaps it its CPU goes to clusterinit's own cutime, not to the worker's. A
// daemonising grandchild thus escapes MAX_RSS and MAX_CPU; clusterinit reaps
// such orphans but does not charge them to a worker.
//
// # Pids
//
// The pids given to Sample are pids as seen in the procfs mounted at the
// Sampler's root, which must therefore belong to the caller's pid namespace
// (the default, /proc, does). Only thread-group leaders are listed in /proc,
// so a process counts once however many threads it has, and its stat figures
// cover all its threads.
package procsample
