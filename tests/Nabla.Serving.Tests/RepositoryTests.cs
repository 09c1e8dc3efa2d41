using Xunit;

namespace Nabla.Serving.Tests;

/// <summary>Model configuration parsing, version policies and names, without a server.</summary>
public sealed class RepositoryTests
{
    [Theory]
    [InlineData("mnist", true)]
    [InlineData("resnet-50.v2", true)]
    [InlineData("a_b", true)]
    [InlineData("..", false)]
    [InlineData(".", false)]
    [InlineData("../etc", false)]
    [InlineData("a/b", false)]
    [InlineData("a\\b", false)]
    [InlineData("a..b", false)]
    [InlineData(".hidden", false)]
    [InlineData("-x", false)]
    [InlineData("", false)]
    [InlineData("has space", false)]
    public void ModelNames(string name, bool valid) => Assert.Equal(valid, ModelRepository.IsValidName(name));

    [Fact]
    public void VersionPolicies()
    {
        long[] avail = [1, 3, 2, 10];
        Assert.Equal([10L], new VersionPolicy.Latest(1).Select(avail));
        Assert.Equal([3L, 10], new VersionPolicy.Latest(2).Select(avail));
        Assert.Equal([1L, 2, 3, 10], new VersionPolicy.All().Select(avail));
        Assert.Equal([2L, 10], new VersionPolicy.Specific([2, 10, 99]).Select(avail));
    }

    [Fact]
    public void ParsesTritonStyleConfig()
    {
        var c = ModelConfig.Parse("""
            {
              "name": "m", "max_batch_size": "8",
              "input": [ { "name": "x", "data_type": "TYPE_FP32", "dims": [ "16" ] } ],
              "outputs": [ { "name": "y", "datatype": "INT64", "dims": [ -1 ] } ],
              "version_policy": { "specific": { "versions": [ 1, 3 ] } },
              "dynamic_batching": { "preferred_batch_size": [ 4, 8 ], "max_queue_delay_microseconds": 2000,
                                    "default_queue_policy": { "max_queue_size": 64, "default_timeout_microseconds": 100000 } }
            }
            """, "m");
        Assert.Equal(8, c.MaxBatchSize);
        Assert.Equal(new TensorSpec("x", "FP32", [16]).Dims, c.Inputs[0].Dims);
        Assert.Equal("INT64", c.Outputs[0].Datatype);
        Assert.Equal([-1L, 16], c.ExposedShape(c.Inputs[0]));
        Assert.Equal([1L, 3], Assert.IsType<VersionPolicy.Specific>(c.VersionPolicy).Versions);
        Assert.Equal(2000, c.DynamicBatching!.MaxQueueDelayMicroseconds);
        Assert.Equal(64, c.DynamicBatching.DefaultQueuePolicy!.MaxQueueSize);
    }

    [Theory]
    [InlineData("{", "invalid JSON")]
    [InlineData("""{"name": "other"}""", "differs")]
    [InlineData("""{"platform": "tensorflow_savedmodel"}""", "platform")]
    [InlineData("""{"input": [ { "name": "x", "data_type": "TYPE_FLOAT", "dims": [1] } ]}""", "unknown data_type")]
    [InlineData("""{"input": [ { "name": "x", "data_type": "TYPE_FP32", "dims": [0] } ]}""", "positive or -1")]
    [InlineData("""{"input": [ { "name": "x", "data_type": "TYPE_FP32", "dims": [] } ]}""", "may not be empty")]
    [InlineData("""{"max_batch_size": -1}""", "max_batch_size")]
    [InlineData("""{"dynamic_batching": {}}""", "max_batch_size > 0")]
    [InlineData("""{"version_policy": { "latest": { "num_versions": 0 } }}""", "num_versions")]
    [InlineData("""{"default_model_filename": "../x.onnx"}""", "plain file name")]
    public void RejectsBadConfig(string json, string expected)
    {
        var e = Assert.Throws<ModelFormatException>(() => ModelConfig.Parse(json, "m"));
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData("TYPE_INT16", "INT16")]
    [InlineData("TYPE_UINT16", "UINT16")]
    [InlineData("TYPE_UINT32", "UINT32")]
    [InlineData("TYPE_UINT64", "UINT64")]
    public void WideIntegerConfigTypesAreAccepted(string configName, string wire)
    {
        var c = ModelConfig.Parse($$"""{"input": [ { "name": "x", "data_type": "{{configName}}", "dims": [1] } ]}""", "m");
        Assert.Equal(wire, c.Inputs[0].Datatype);
    }

    [Fact]
    public void DefaultLimitIs64MiB() => Assert.Equal(64L << 20, new ServingOptions { ModelRepository = "." }.MaxRequestBytes);

    [Fact]
    public async Task LoadAllRecordsFailuresAndNeverThrows()
    {
        using var tmp = new TempRepository();
        var repo = new ModelRepository(tmp.Root);
        await repo.LoadAllAsync();
        var index = repo.Index(readyOnly: false);
        Assert.Contains(index, r => r is { Name: "mnist", Version: "1", State: ModelState.Ready });
        Assert.Contains(index, r => r is { Name: "mnist_versions", Version: "2", State: ModelState.Unavailable });
        Assert.Equal(1, repo.Resolve("mnist_versions", null).Version);
        Assert.Equal(ServingErrorKind.NotFound, Assert.Throws<ServingException>(() => repo.Resolve("../mnist", null)).Kind);
        Assert.Equal(ServingErrorKind.Unavailable, Assert.Throws<ServingException>(() => repo.Resolve("broken_config", null)).Kind);
    }
}
