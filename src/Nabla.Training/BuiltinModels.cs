using Nabla.NN;

namespace Nabla.Training;

/// <summary>The small models that `nabla train` knows by name, for 1×28×28 images and 10 classes by default.</summary>
public static class BuiltinModels
{
    public static readonly string[] Names = ["mlp", "lenet", "cnn", "resnet"];

    public static Module Create(string name, int inChannels = 1, int imageSize = 28, int numClasses = 10) => name switch
    {
        "mlp" => new Sequential(new Flatten(), new Linear(inChannels * imageSize * imageSize, 512), new ReLU(), new Linear(512, 256), new ReLU(), new Linear(256, numClasses)),
        "lenet" => LeNet(inChannels, imageSize, numClasses),
        "cnn" => Cnn(inChannels, imageSize, numClasses),
        "resnet" => new SmallResNet(inChannels, numClasses),
        _ => throw new NablaException($"unknown model '{name}'; choose one of: {string.Join(", ", Names)}"),
    };

    /// <summary>LeNet-5 style: two 5×5 convolutions with max pooling, then 120-84-classes.</summary>
    public static Sequential LeNet(int inChannels = 1, int imageSize = 28, int numClasses = 10)
    {
        int s = (imageSize / 2 - 4) / 2;
        return new Sequential(
            new Conv2d(inChannels, 6, 5, padding: 2), new ReLU(), new MaxPool2d(2),
            new Conv2d(6, 16, 5), new ReLU(), new MaxPool2d(2),
            new Flatten(), new Linear(16 * s * s, 120), new ReLU(), new Linear(120, 84), new ReLU(), new Linear(84, numClasses));
    }

    /// <summary>The quickstart CNN: two 3×3 conv + batch-norm + pool stages and a linear classifier.</summary>
    public static Sequential Cnn(int inChannels = 1, int imageSize = 28, int numClasses = 10)
    {
        int s = imageSize / 4;
        return new Sequential(
            new Conv2d(inChannels, 32, 3, padding: 1), new BatchNorm2d(32), new ReLU(), new MaxPool2d(2),
            new Conv2d(32, 64, 3, padding: 1), new BatchNorm2d(64), new ReLU(), new MaxPool2d(2),
            new Flatten(), new Dropout(0.25), new Linear(64 * s * s, numClasses));
    }
}

/// <summary>A small ResNet: a 3×3 stem and three stages of two basic blocks (16, 32, 64 channels), global pooling.</summary>
public sealed class SmallResNet : Module
{
    readonly Sequential stem, stages;
    readonly Linear fc;

    public SmallResNet(int inChannels = 1, int numClasses = 10)
    {
        stem = RegisterModule("stem", new Sequential(new Conv2d(inChannels, 16, 3, padding: 1, bias: false), new BatchNorm2d(16), new ReLU()));
        stages = RegisterModule("layers", new Sequential(
            new BasicBlock(16, 16, 1), new BasicBlock(16, 16, 1),
            new BasicBlock(16, 32, 2), new BasicBlock(32, 32, 1),
            new BasicBlock(32, 64, 2), new BasicBlock(64, 64, 1)));
        fc = RegisterModule("fc", new Linear(64, numClasses));
    }

    public override Tensor Forward(Tensor x)
    {
        var h = stages.Forward(stem.Forward(x));
        return fc.Forward(h.Mean([2, 3]));
    }
}

/// <summary>torchvision's BasicBlock: conv-bn-relu-conv-bn plus a (projected) shortcut, then relu.</summary>
public sealed class BasicBlock : Module
{
    readonly Conv2d conv1, conv2;
    readonly BatchNorm2d bn1, bn2;
    readonly Sequential? downsample;

    public BasicBlock(int inPlanes, int planes, int stride)
    {
        conv1 = RegisterModule("conv1", new Conv2d(inPlanes, planes, 3, stride, 1, bias: false));
        bn1 = RegisterModule("bn1", new BatchNorm2d(planes));
        conv2 = RegisterModule("conv2", new Conv2d(planes, planes, 3, 1, 1, bias: false));
        bn2 = RegisterModule("bn2", new BatchNorm2d(planes));
        if (stride != 1 || inPlanes != planes)
            downsample = RegisterModule("downsample", new Sequential(new Conv2d(inPlanes, planes, 1, stride, bias: false), new BatchNorm2d(planes)));
    }

    public override Tensor Forward(Tensor x)
    {
        var y = bn2.Forward(conv2.Forward(bn1.Forward(conv1.Forward(x)).Relu()));
        return y.Add(downsample?.Forward(x) ?? x).Relu();
    }
}
