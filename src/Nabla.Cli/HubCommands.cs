using System.Diagnostics;
using Nabla.Models;

namespace Nabla.Cli;

/// <summary>The hub verb: download a repository snapshot into the Hugging Face cache shared with Python.</summary>
static class HubCommands
{
    public const string HubHelp = """
        nabla hub download ORG/NAME [options]: download a Hugging Face Hub repository (or some of its files) into the
        cache that Python's huggingface_hub uses, and print the snapshot folder.

        options:
          --revision R        branch, tag or commit (default main)
          --include GLOB      download only files matching GLOB (fnmatch: '*' spans folders; repeatable)
          --exclude GLOB      skip files matching GLOB (repeatable)
          --file PATH         download just this one file and print its path
          --repo-type T       model (default), dataset or space
          --quiet             print only the resulting path

        environment: HF_ENDPOINT (default https://huggingface.co), HF_HOME / HF_HUB_CACHE (cache folder, default
        ~/.cache/huggingface/hub), HF_TOKEN (for private and gated repositories), HF_HUB_OFFLINE=1 (cache only),
        HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT (seconds, default 10).
        """;

    public static int Hub(string[] argv)
    {
        if (argv.Length == 0 || argv[0] != "download") throw new UsageException("expects a subcommand: download");
        string? repo = null, revision = null, file = null, repoType = null;
        var include = new List<string>();
        var exclude = new List<string>();
        bool quiet = false;
        for (int i = 1; i < argv.Length; i++)
        {
            var a = argv[i];
            string Value()
            {
                if (i + 1 >= argv.Length) throw new UsageException($"option '{a}' needs a value");
                return argv[++i];
            }
            switch (a)
            {
                case "--revision": revision = Value(); break;
                case "--include": include.Add(Value()); break;
                case "--exclude": exclude.Add(Value()); break;
                case "--file": file = Value(); break;
                case "--repo-type": repoType = Value(); break;
                case "--quiet": quiet = true; break;
                default:
                    if (a.StartsWith("--", StringComparison.Ordinal)) throw new UsageException($"unknown option '{a}'");
                    if (repo is not null) throw new UsageException($"unexpected argument '{a}': expects one ORG/NAME");
                    repo = a;
                    break;
            }
        }
        if (repo is null) throw new UsageException("expects a repository id ORG/NAME");
        var type = repoType switch
        {
            null or "model" => RepoType.Model,
            "dataset" => RepoType.Dataset,
            "space" => RepoType.Space,
            _ => throw new UsageException($"--repo-type must be model, dataset or space, got '{repoType}'"),
        };
        try
        {
            HubCache.ValidateRepoId(repo);
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message);
        }

        var printer = new ProgressPrinter(quiet);
        var options = HubOptions.FromEnvironment() with { Progress = printer.Report };
        using var client = new HubClient(options);
        var clock = Stopwatch.StartNew();
        string path = file is not null
            ? client.Download(repo, file, revision ?? "main", type)
            : client.SnapshotDownload(repo, revision ?? "main", include, exclude, type);
        if (!quiet)
            Console.Error.WriteLine($"{printer.Files} file(s) fetched, {Size(printer.Bytes)} in {clock.Elapsed.TotalSeconds:0.0} s; cache {options.CacheDir}"
                + (options.Offline ? " (offline)" : ""));
        Console.WriteLine(path);
        return 0;
    }

    static string Size(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.00} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):0.0} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:0.0} KiB",
        _ => $"{bytes} B",
    };

    /// <summary>Progress on stderr: one line per file when it completes, and at most one line every two seconds during a large file.</summary>
    sealed class ProgressPrinter(bool quiet)
    {
        readonly Stopwatch sinceLine = Stopwatch.StartNew();
        readonly HashSet<string> started = [];
        long lastDone;

        public int Files { get; private set; }
        public long Bytes { get; private set; }

        public void Report(HubProgress p)
        {
            if (p.Completed)
            {
                // A completed report without a transfer before it is a file found in the cache.
                bool fetched = started.Remove(p.Filename);
                if (fetched)
                {
                    Files++;
                    Bytes += p.BytesDone;
                }
                if (!quiet) Console.Error.WriteLine($"  {p.Filename}  {Size(p.BytesDone)}{(fetched ? "" : " (cached)")}");
                return;
            }
            if (started.Add(p.Filename))
            {
                sinceLine.Restart();
                lastDone = p.BytesDone;
                return;
            }
            if (quiet || sinceLine.Elapsed < TimeSpan.FromSeconds(2)) return;
            var rate = (p.BytesDone - lastDone) / sinceLine.Elapsed.TotalSeconds;
            var pct = p.TotalBytes is long t && t > 0 ? $" {100.0 * p.BytesDone / t,5:0.0}% of {Size(t)}" : "";
            Console.Error.WriteLine($"  {p.Filename}  {Size(p.BytesDone)}{pct}  {Size((long)rate)}/s");
            sinceLine.Restart();
            lastDone = p.BytesDone;
        }
    }
}
