using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Nabla.Serving.Tests;

/// <summary>
/// The real <c>nabla serve</c> process (the CLI built beside this test project) on ephemeral ports: started, its output
/// collected, and its REST and gRPC ports read from the start-up banner.
/// </summary>
sealed class ServeProcess : IDisposable
{
    readonly List<string> lines = [];
    readonly TaskCompletionSource<string> banner = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Process Process { get; }
    public int RestPort { get; private set; }
    public int GrpcPort { get; private set; }

    /// <summary>Everything the process wrote so far, stdout and stderr interleaved by line.</summary>
    public string Output { get { lock (lines) return string.Join("\n", lines); } }

    ServeProcess(Process p) => Process = p;

    /// <summary>tests/Nabla.Serving.Tests/bin/&lt;config&gt;/net10.0 → src/Nabla.Cli/bin/&lt;config&gt;/net10.0/Nabla.Cli.dll</summary>
    public static string CliDll()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        var repo = dir.Parent!.Parent!.Parent!.Parent!.Parent!.FullName;
        return Path.Combine(repo, "src", "Nabla.Cli", "bin", dir.Parent!.Name, dir.Name, "Nabla.Cli.dll");
    }

    /// <summary>Starts <c>nabla serve --model-repository REPO --http-port 0 --grpc-port 0 ARGS</c> and waits for its banner.</summary>
    public static async Task<ServeProcess> StartAsync(string repository, string[] args, TimeSpan bannerTimeout, IReadOnlyDictionary<string, string>? environment = null)
    {
        var dll = CliDll();
        if (!File.Exists(dll)) throw new FileNotFoundException($"{dll} was not built");
        var psi = new ProcessStartInfo("dotnet", [dll, "serve", "--model-repository", repository, "--http-port", "0", "--grpc-port", "0", .. args])
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
        };
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        var s = new ServeProcess(Process.Start(psi)!);
        s.Process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (s.lines) s.lines.Add(e.Data);
            if (e.Data.StartsWith("nabla serve: REST on", StringComparison.Ordinal)) s.banner.TrySetResult(e.Data);
        };
        s.Process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (s.lines) s.lines.Add(e.Data); };
        s.Process.BeginOutputReadLine();
        s.Process.BeginErrorReadLine();
        try
        {
            var line = await s.banner.Task.WaitAsync(bannerTimeout);
            var m = Regex.Match(line, @"REST on http://127\.0\.0\.1:(\d+), gRPC on http://127\.0\.0\.1:(\d+)");
            if (!m.Success) throw new InvalidOperationException($"unexpected banner: {line}");
            s.RestPort = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
            s.GrpcPort = int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
            return s;
        }
        catch (Exception e)
        {
            var output = s.Output;
            s.Dispose();
            throw new InvalidOperationException($"nabla serve did not start: {e.Message}\n{output}", e);
        }
    }

    /// <summary>Sends SIGTERM (what a container runtime sends to stop it).</summary>
    public async Task TerminateAsync()
    {
        using var kill = Process.Start("kill", ["-TERM", Process.Id.ToString(CultureInfo.InvariantCulture)])!;
        await kill.WaitForExitAsync();
    }

    public void Dispose()
    {
        if (!Process.HasExited) Process.Kill(entireProcessTree: true);
        Process.Dispose();
    }
}
