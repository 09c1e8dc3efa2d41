using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Nabla.Interop.Onnx;
using Nabla.Vision;
using Xunit;
using Xunit.Abstractions;

namespace Nabla.Onnx.Tests;

/// <summary>
/// Real models made by other tools: ResNet18 (ML.NET's DnnImageFeaturizer package, opset 8) against ONNX Runtime,
/// and the ONNX model zoo's mnist-8 on wonnx's digit images.
/// </summary>
public sealed class RealModelTests(ITestOutputHelper output)
{
    static string FixtureDir(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "fixtures", .. parts]);

    /// <summary>ResNet18.onnx as the NuGet package's build props copy it into the test output.</summary>
    public static string ResNet18Path => Path.Combine(AppContext.BaseDirectory, "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx");

    [Fact]
    public void ResNet18MatchesOnnxRuntime()
    {
        Assert.True(File.Exists(ResNet18Path), $"{ResNet18Path} is missing (Microsoft.ML.DnnImageFeaturizer.ResNet18 copies it)");
        var model = OnnxModel.Load(ResNet18Path);
        Assert.Equal(8, model.Opsets[""]);

        using var session = new InferenceSession(ResNet18Path);
        var inputName = session.InputMetadata.Keys.Single();
        var outputName = session.OutputMetadata.Keys.First();
        int[] shape = [1, 3, 224, 224];
        var x = Tensor.Randn(shape, DType.Float32, new Generator(1234));
        var data = x.ToArray<float>();

        using var results = session.Run([NamedOnnxValue.CreateFromTensor(inputName, new DenseTensor<float>(data, shape))]);
        var ortOut = results.First(r => r.Name == outputName).AsTensor<float>();
        var expected = ortOut.ToArray();
        var expectedShape = ortOut.Dimensions.ToArray();

        var y = model.Run(new Dictionary<string, Tensor> { [inputName] = x })[outputName];
        Assert.Equal(expectedShape, y.Shape);
        Assert.Equal(512, y.Shape.Aggregate(1, (p, d) => p * d));
        var actual = y.ToArray<float>();
        double maxAbs = 0, maxRel = 0, maxRef = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double d = Math.Abs(actual[i] - expected[i]);
            maxAbs = Math.Max(maxAbs, d);
            maxRel = Math.Max(maxRel, d / Math.Max(Math.Abs(expected[i]), 1e-3));
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
        }
        output.WriteLine($"ResNet18 [{string.Join(", ", expectedShape)}]: max |diff| {maxAbs:G3}, max rel {maxRel:G3}, max |ORT| {maxRef:G4}");
        // NOTE: absolute 1e-4 on features up to ~10 (about 1e-5 relative to the largest): the two implementations sum
        // thousands of float32 products in different orders; observed max |diff| is ~1.3e-5.
        for (int i = 0; i < actual.Length; i++)
            Assert.True(Math.Abs(actual[i] - expected[i]) <= 1e-4,
                $"feature {i}: Nabla {actual[i]}, ONNX Runtime {expected[i]}");
    }

    public static TheoryData<int> Digits() => [0, 3, 5, 7];

    /// <summary>wonnx's preprocessing: grayscale 28×28, pixel / 255, [1, 1, 28, 28].</summary>
    static Tensor LoadDigit(int digit)
    {
        var img = ImageIO.Read(FixtureDir("onnx", "wonnx-mnist", $"{digit}.jpg"), grayscale: true);
        Assert.Equal([28, 28, 1], img.Shape);
        return img.To(DType.Float32).Div(255.0).Reshape(1, 1, 28, 28);
    }

    [Theory]
    [MemberData(nameof(Digits))]
    public void Mnist8ClassifiesWonnxDigits(int digit)
    {
        var model = OnnxModel.Load(FixtureDir("mnist-8", "model.onnx"));
        var logits = model.Run(LoadDigit(digit))[0];
        Assert.Equal([1, 10], logits.Shape);
        output.WriteLine($"{digit}.jpg: logits [{string.Join(", ", logits.ToArray<float>().Select(v => v.ToString("F2")))}]");
        Assert.Equal(digit, (int)logits.Reshape(10).Argmax().Item());
    }
}
