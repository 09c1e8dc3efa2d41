using System.Globalization;
using System.Text.Json;
using Nabla.NN;

namespace Nabla.Models.Zoo;

/// <summary>
/// torchvision's ResNet shape: the block kind, blocks per stage, the stem width (64 in torchvision; smaller
/// widths keep the same names for tests) and the number of classes.
/// </summary>
public sealed record ResNetConfig
{
    public bool Bottleneck { get; init; }
    public int[] Layers { get; init; } = [2, 2, 2, 2];
    public int Width { get; init; } = 64;
    public int NumClasses { get; init; } = 1000;
    public int NumChannels { get; init; } = 3;

    public static ResNetConfig ResNet18(int numClasses = 1000) => new() { Layers = [2, 2, 2, 2], NumClasses = numClasses };
    public static ResNetConfig ResNet34(int numClasses = 1000) => new() { Layers = [3, 4, 6, 3], NumClasses = numClasses };
    public static ResNetConfig ResNet50(int numClasses = 1000) => new() { Bottleneck = true, Layers = [3, 4, 6, 3], NumClasses = numClasses };
    public static ResNetConfig ResNet101(int numClasses = 1000) => new() { Bottleneck = true, Layers = [3, 4, 23, 3], NumClasses = numClasses };
    public static ResNetConfig ResNet152(int numClasses = 1000) => new() { Bottleneck = true, Layers = [3, 8, 36, 3], NumClasses = numClasses };

    /// <summary>By torchvision name: resnet18, resnet34, resnet50, resnet101, resnet152.</summary>
    public static ResNetConfig Named(string name, int numClasses = 1000) => name.ToLowerInvariant() switch
    {
        "resnet18" => ResNet18(numClasses),
        "resnet34" => ResNet34(numClasses),
        "resnet50" => ResNet50(numClasses),
        "resnet101" => ResNet101(numClasses),
        "resnet152" => ResNet152(numClasses),
        _ => throw new NotSupportedException($"resnet: unknown variant '{name}' (resnet18, resnet34, resnet50, resnet101, resnet152)"),
    };

    /// <summary>
    /// torchvision has no config file; this reads the small JSON the zoo writes beside torchvision weights:
    /// {"block_type": "basicblock"|"bottleneck", "layers": [..4 ints..], "width": 64, "num_classes": 1000}
    /// (or {"variant": "resnet50", "num_classes": 10}).
    /// </summary>
    public static ResNetConfig FromJson(HfConfig c)
    {
        int classes = c.GetInt("num_classes", 1000);
        if (c.GetString("variant", null) is string v) return Named(v, classes);
        string block = c.GetString("block_type", "basicblock")!;
        if (!c.TryGet("layers", out var layers) || layers.ValueKind != JsonValueKind.Array || layers.GetArrayLength() != 4)
            throw new ModelFormatException($"{c.Source}: 'layers' must be a list of 4 block counts");
        return new()
        {
            Bottleneck = block switch
            {
                "bottleneck" => true,
                "basicblock" or "basic" => false,
                _ => throw new ModelFormatException($"{c.Source}: block_type must be 'basicblock' or 'bottleneck', got '{block}'"),
            },
            Layers = layers.EnumerateArray().Select(e => e.GetInt32()).ToArray(),
            Width = c.GetInt("width", 64),
            NumClasses = classes,
            NumChannels = c.GetInt("num_channels", 3),
        };
    }
}

/// <summary>Two 3×3 convs (conv1/bn1, conv2/bn2) with an identity or downsample shortcut.</summary>
public sealed class BasicBlock : Module
{
    public Conv2d Conv1 { get; }
    public BatchNorm2d Bn1 { get; }
    public Conv2d Conv2 { get; }
    public BatchNorm2d Bn2 { get; }
    public Sequential? Downsample { get; }

    public BasicBlock(int inPlanes, int planes, int stride, Sequential? downsample)
    {
        Conv1 = RegisterModule("conv1", new Conv2d(inPlanes, planes, 3, stride, 1, bias: false));
        Bn1 = RegisterModule("bn1", new BatchNorm2d(planes));
        Conv2 = RegisterModule("conv2", new Conv2d(planes, planes, 3, 1, 1, bias: false));
        Bn2 = RegisterModule("bn2", new BatchNorm2d(planes));
        if (downsample is not null) Downsample = RegisterModule("downsample", downsample);
    }

    public override Tensor Forward(Tensor input)
    {
        var y = Bn1.Forward(Conv1.Forward(input)).Relu();
        y = Bn2.Forward(Conv2.Forward(y));
        return y.Add(Downsample?.Forward(input) ?? input).Relu();
    }
}

/// <summary>1×1 reduce, 3×3 (carrying the stride, torchvision's "v1.5"), 1×1 expand ×4, with shortcut.</summary>
public sealed class Bottleneck : Module
{
    public Conv2d Conv1 { get; }
    public BatchNorm2d Bn1 { get; }
    public Conv2d Conv2 { get; }
    public BatchNorm2d Bn2 { get; }
    public Conv2d Conv3 { get; }
    public BatchNorm2d Bn3 { get; }
    public Sequential? Downsample { get; }

    public Bottleneck(int inPlanes, int planes, int stride, Sequential? downsample)
    {
        Conv1 = RegisterModule("conv1", new Conv2d(inPlanes, planes, 1, bias: false));
        Bn1 = RegisterModule("bn1", new BatchNorm2d(planes));
        Conv2 = RegisterModule("conv2", new Conv2d(planes, planes, 3, stride, 1, bias: false));
        Bn2 = RegisterModule("bn2", new BatchNorm2d(planes));
        Conv3 = RegisterModule("conv3", new Conv2d(planes, planes * 4, 1, bias: false));
        Bn3 = RegisterModule("bn3", new BatchNorm2d(planes * 4));
        if (downsample is not null) Downsample = RegisterModule("downsample", downsample);
    }

    public override Tensor Forward(Tensor input)
    {
        var y = Bn1.Forward(Conv1.Forward(input)).Relu();
        y = Bn2.Forward(Conv2.Forward(y)).Relu();
        y = Bn3.Forward(Conv3.Forward(y));
        return y.Add(Downsample?.Forward(input) ?? input).Relu();
    }
}

/// <summary>
/// torchvision.models.ResNet with its state-dict names: conv1, bn1, layer1..layer4 (blocks "0", "1", ... with
/// downsample.0 conv / downsample.1 bn), fc. Input (B, 3, H, W) normalized as torchvision's transforms.
/// </summary>
public sealed class ResNet : Module
{
    public ResNetConfig Config { get; }
    public Conv2d Conv1 { get; }
    public BatchNorm2d Bn1 { get; }
    public Sequential Layer1 { get; }
    public Sequential Layer2 { get; }
    public Sequential Layer3 { get; }
    public Sequential Layer4 { get; }
    public Linear Fc { get; }

    public ResNet(ResNetConfig config)
    {
        Config = config;
        int w = config.Width, expansion = config.Bottleneck ? 4 : 1;
        int inPlanes = w;
        Conv1 = RegisterModule("conv1", new Conv2d(config.NumChannels, w, 7, 2, 3, bias: false));
        Bn1 = RegisterModule("bn1", new BatchNorm2d(w));
        Sequential Stage(int planes, int blocks, int stride)
        {
            var s = new Sequential();
            for (int i = 0; i < blocks; i++)
            {
                int st = i == 0 ? stride : 1;
                Sequential? ds = null;
                if (i == 0 && (stride != 1 || inPlanes != planes * expansion))
                    ds = new Sequential(new Conv2d(inPlanes, planes * expansion, 1, stride, bias: false), new BatchNorm2d(planes * expansion));
                s.Append(config.Bottleneck ? new Bottleneck(inPlanes, planes, st, ds) : new BasicBlock(inPlanes, planes, st, ds));
                inPlanes = planes * expansion;
            }
            return s;
        }
        Layer1 = RegisterModule("layer1", Stage(w, config.Layers[0], 1));
        Layer2 = RegisterModule("layer2", Stage(w * 2, config.Layers[1], 2));
        Layer3 = RegisterModule("layer3", Stage(w * 4, config.Layers[2], 2));
        Layer4 = RegisterModule("layer4", Stage(w * 8, config.Layers[3], 2));
        Fc = RegisterModule("fc", new Linear(w * 8 * expansion, config.NumClasses));
    }

    /// <summary>The pooled features (B, 8·width·expansion) before fc.</summary>
    public Tensor Features(Tensor input)
    {
        if (input.Dim != 4 || input.Size(1) != Config.NumChannels)
            throw new ShapeMismatchException($"resnet: input must be (B, {Config.NumChannels}, H, W), got {ZooOps.Fmt(input.Shape)}");
        var x = Functional.MaxPool2d(Bn1.Forward(Conv1.Forward(input)).Relu(), 3, 2, 1);
        x = Layer4.Forward(Layer3.Forward(Layer2.Forward(Layer1.Forward(x))));
        return Functional.AdaptiveAvgPool2d(x, (1, 1)).Flatten(1);
    }

    /// <summary>Class logits (B, num_classes).</summary>
    public override Tensor Forward(Tensor input) => Fc.Forward(Features(input));

    /// <summary>
    /// Loads a torchvision state dict (.pth, .pt, .safetensors) into <paramref name="config"/>'s ResNet.
    /// Old checkpoints without bn.num_batches_tracked load too.
    /// </summary>
    public static ResNet FromWeights(ResNetConfig config, string weightsPath)
    {
        var model = new ResNet(config);
        model.LoadWeights(PretrainedWeights.Load(weightsPath), weightsPath);
        model.Eval();
        return model;
    }

    /// <summary>Loads a folder holding config.json (see <see cref="ResNetConfig.FromJson"/>) and the weights.</summary>
    public static ResNet FromPretrained(string directory) => FromWeights(ResNetConfig.FromJson(HfConfig.Load(directory)), directory);

    public List<string> LoadWeights(IReadOnlyDictionary<string, Tensor> weights, string source = "weights") =>
        PretrainedWeights.LoadInto(this, weights, source, allowMissing: n => n.EndsWith(".num_batches_tracked", StringComparison.Ordinal));

    protected override string ExtraRepr() => string.Create(CultureInfo.InvariantCulture,
        $"{(Config.Bottleneck ? "bottleneck" : "basic")}, layers=[{string.Join(", ", Config.Layers)}], width={Config.Width}, classes={Config.NumClasses}");
}
