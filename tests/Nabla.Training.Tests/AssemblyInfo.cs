using Xunit;

// NOTE: the tests share process-wide state (Generator.Default, NABLA_* environment variables, the console),
// so they run one at a time; on a 2-core machine parallel classes would gain little anyway.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
