using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Grpc.Core;
using Nabla.Serving.Grpc;
using Xunit;

namespace Nabla.Serving.Tests;

/// <summary>GET /metrics against the statistics extension and the gRPC statistics and configuration RPCs.</summary>
public sealed partial class MetricsTests(BatchingFixture server) : IClassFixture<BatchingFixture>
{
    [GeneratedRegex("^(?<name>[a-z_]+)\\{(?<labels>[^}]*)\\} (?<value>\\S+)$")]
    private static partial Regex Sample();

    /// <summary>Every sample line of the exposition: (name, labels, value).</summary>
    static List<(string Name, string Labels, double Value)> Parse(string text)
    {
        var list = new List<(string, string, double)>();
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0 || line.StartsWith('#')) continue;
            var m = Sample().Match(line);
            Assert.True(m.Success, $"not a sample line: '{line}'");
            list.Add((m.Groups["name"].Value, m.Groups["labels"].Value, double.Parse(m.Groups["value"].Value, CultureInfo.InvariantCulture)));
        }
        return list;
    }

    static double Value(List<(string Name, string Labels, double Value)> samples, string name, string labels) =>
        samples.Single(s => s.Name == name && s.Labels == labels).Value;

    [Fact]
    public async Task PrometheusTextAgreesWithStatistics()
    {
        const string model = "lin_metrics";
        var http = server.Http;
        var ok = Enumerable.Range(0, 6).Select(i => Json.Post(http, $"/v2/models/{model}/infer", LinearModel.InferJson(LinearModel.Row(i))));
        foreach (var r in await Task.WhenAll(ok)) Assert.Equal(200, r.Item1);
        // Two failures: a wrong shape (400, counted as OTHER).
        for (int i = 0; i < 2; i++)
            Json.AssertError(await Json.Post(http, $"/v2/models/{model}/infer",
                """{ "inputs": [ { "name": "input", "shape": [1, 5], "datatype": "FP32", "data": [1,2,3,4,5] } ] }"""), 400);

        using var resp = await http.GetAsync("/metrics");
        Assert.Equal(200, (int)resp.StatusCode);
        Assert.StartsWith("text/plain", resp.Content.Headers.ContentType!.MediaType);
        Assert.Equal("0.0.4", resp.Content.Headers.ContentType.Parameters.Single(p => p.Name == "version").Value);
        var text = await resp.Content.ReadAsStringAsync();
        Assert.Contains("# TYPE nabla_inference_request_success counter", text);
        Assert.Contains("# TYPE nabla_inference_batch_size histogram", text);
        var samples = Parse(text);
        var stats = (await Json.Get(http, $"/v2/models/{model}/stats")).Item2.GetProperty("model_stats")[0];
        var inf = stats.GetProperty("inference_stats");
        const string l = "model=\"lin_metrics\",version=\"1\"";

        Assert.Equal(6, Value(samples, "nabla_inference_request_success", l));
        Assert.Equal(inf.GetProperty("success").GetProperty("count").GetInt64(), Value(samples, "nabla_inference_request_success", l));
        Assert.Equal(2, Value(samples, "nabla_inference_request_failure", l + ",reason=\"OTHER\""));
        Assert.Equal(0, Value(samples, "nabla_inference_request_failure", l + ",reason=\"REJECTED\""));
        Assert.Equal(inf.GetProperty("fail").GetProperty("count").GetInt64(),
            samples.Where(s => s.Name == "nabla_inference_request_failure" && s.Labels.StartsWith(l, StringComparison.Ordinal)).Sum(s => s.Value));
        long executions = stats.GetProperty("execution_count").GetInt64();
        Assert.Equal(6, stats.GetProperty("inference_count").GetInt64());
        Assert.Equal(6, Value(samples, "nabla_inference_count", l));
        Assert.Equal(executions, Value(samples, "nabla_inference_exec_count", l));
        Assert.Equal(executions, Value(samples, "nabla_inference_batch_size_count", l));
        Assert.Equal(6, Value(samples, "nabla_inference_batch_size_sum", l));
        Assert.Equal(6, Value(samples, "nabla_inference_queue_duration_seconds_count", l));
        Assert.Equal(6, Value(samples, "nabla_inference_queue_duration_seconds_bucket", l + ",le=\"+Inf\""));
        Assert.Equal(executions, Value(samples, "nabla_inference_compute_duration_seconds_count", l));
        Assert.Equal(inf.GetProperty("queue").GetProperty("ns").GetInt64() / 1000, Value(samples, "nabla_inference_queue_duration_us", l));
        Assert.Equal(inf.GetProperty("compute_infer").GetProperty("ns").GetInt64() / 1000, Value(samples, "nabla_inference_compute_infer_duration_us", l));
        Assert.Equal(0, Value(samples, "nabla_inference_pending_request_count", l));
        // Buckets are cumulative.
        var buckets = samples.Where(s => s.Name == "nabla_inference_request_duration_seconds_bucket" && s.Labels.StartsWith(l + ",", StringComparison.Ordinal)).Select(s => s.Value).ToList();
        Assert.True(buckets.Zip(buckets.Skip(1)).All(p => p.First <= p.Second));
        // Other models appear with their own labels (mnist has served nothing in this fixture).
        Assert.Equal(0, Value(samples, "nabla_inference_request_success", "model=\"mnist\",version=\"1\""));

        // The gRPC statistics carry the same numbers, batch_stats included.
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        var g = (await client.ModelStatisticsAsync(new ModelStatisticsRequest { Name = model })).ModelStats.Single();
        Assert.Equal("1", g.Version);
        Assert.Equal(6UL, g.InferenceCount);
        Assert.Equal((ulong)executions, g.ExecutionCount);
        Assert.Equal(6UL, g.InferenceStats.Success.Count);
        Assert.Equal(2UL, g.InferenceStats.Fail.Count);
        Assert.Equal((ulong)executions, (ulong)g.BatchStats.Sum(b => (long)b.ComputeInfer.Count));
        Assert.Equal(6UL, (ulong)g.BatchStats.Sum(b => (long)(b.BatchSize * b.ComputeInfer.Count)));
        Assert.Equal(stats.GetProperty("batch_stats").GetArrayLength(), g.BatchStats.Count);
        Assert.True((await client.ModelStatisticsAsync(new ModelStatisticsRequest())).ModelStats.Count >= 2);
    }

    [Fact]
    public async Task GrpcModelConfigMatchesRest()
    {
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        var c = (await client.ModelConfigAsync(new ModelConfigRequest { Name = "lin_queue" })).Config;
        Assert.Equal("lin_queue", c.Name);
        Assert.Equal(8, c.MaxBatchSize);
        Assert.Equal("input", c.Input.Single().Name);
        Assert.Equal(DataType.TypeFp32, c.Input[0].DataType);
        Assert.Equal([4L], c.Input[0].Dims);
        Assert.Equal([3L], c.Output.Single().Dims);
        Assert.Equal(4U, c.DynamicBatching.DefaultQueuePolicy.MaxQueueSize);
        Assert.Equal(1U, c.VersionPolicy.Latest.NumVersions);
        var (status, rest) = await Json.Get(server.Http, "/v2/models/lin_queue/config");
        Assert.Equal(200, status);
        Assert.Equal(rest.GetProperty("max_batch_size").GetInt32(), c.MaxBatchSize);
        var e = await Assert.ThrowsAsync<RpcException>(async () => await client.ModelConfigAsync(new ModelConfigRequest { Name = "no_such_model" }));
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
    }
}
