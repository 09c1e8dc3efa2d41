using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Xunit;
using Xunit.Abstractions;

namespace Nabla.Serving.Tests;

/// <summary>
/// A foreign client: Node's @grpc/grpc-js 1.14.7 with @grpc/proto-loader 0.8.1 reading the project's .proto files.
/// NOTE: needs node and npm (and the npm registry, once; the install is cached in the temp folder); .ci/run installs
/// them where missing, and without them the test fails.
/// </summary>
public sealed class NodeClientTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    static async Task<(int code, string stdout, string stderr)> Run(string file, string[] args, string cwd, int timeoutSeconds)
    {
        var psi = new ProcessStartInfo(file, args) { WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var so = p.StandardOutput.ReadToEndAsync();
        var se = p.StandardError.ReadToEndAsync();
        try { await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(timeoutSeconds)); }
        catch (TimeoutException) { p.Kill(entireProcessTree: true); return (-1, "", "timed out"); }
        return (p.ExitCode, await so, await se);
    }

    [Fact]
    public async Task GrpcJsClientCallsTheServer()
    {
        // NOTE: .ci/run installs Node.js and npm when missing; without them this test fails rather than passing silently.
        Assert.True(File.Exists("/usr/bin/node") && File.Exists("/usr/bin/npm"), "node and npm are required (apt-get install nodejs npm)");
        var dir = Path.Combine(Path.GetTempPath(), "nabla-serving-grpc-js-1.14.7");
        Directory.CreateDirectory(dir);
        if (!Directory.Exists(Path.Combine(dir, "node_modules", "@grpc", "grpc-js")) || !Directory.Exists(Path.Combine(dir, "node_modules", "@grpc", "proto-loader")))
        {
            var (code, _, err) = await Run("/usr/bin/npm", ["install", "--no-audit", "--no-fund", "--silent", "--prefix", dir, "@grpc/grpc-js@1.14.7", "@grpc/proto-loader@0.8.1"], dir, 240);
            Assert.True(code == 0, $"npm install of @grpc/grpc-js failed ({code}): {err}");
        }
        File.Copy(Path.Combine(AppContext.BaseDirectory, "node", "client.js"), Path.Combine(dir, "client.js"), overwrite: true);
        var input = Path.Combine(server.Repository.Root, "input.f32");
        await File.WriteAllBytesAsync(input, MemoryMarshal.AsBytes(Mnist.Input.AsSpan()).ToArray());
        var (rc, stdout, stderr) = await Run("/usr/bin/node", ["client.js", Path.Combine(AppContext.BaseDirectory, "protos"), $"127.0.0.1:{server.GrpcPort}", input], dir, 60);
        Assert.True(rc == 0, $"node exited {rc}: {stderr}");
        var r = JsonDocument.Parse(stdout.Trim().Split('\n')[^1]).RootElement;
        Assert.True(r.GetProperty("live").GetBoolean());
        Assert.Equal("SERVING", r.GetProperty("health").GetString());
        Assert.Equal("Input3", r.GetProperty("input").GetString());
        Assert.Equal("from-node", r.GetProperty("id").GetString());
        Mnist.AssertClose(Mnist.Expected, Json.Floats(r.GetProperty("output")));
        Assert.Equal(5, r.GetProperty("missing").GetInt32()); // NOT_FOUND
    }
}
