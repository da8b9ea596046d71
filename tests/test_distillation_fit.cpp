// Knowledge distillation in fit(): offline (a teacher column in the data) and online (a teacher
// model in memory), for plain models and FeatureModel. alpha = 0 is plain training bit for bit;
// online equals offline on the teacher's predictions; alpha = 1 pulls the student to the teacher;
// a missing or bad teacher is refused before the first step.
#include <cmath>
#include <vector>

#include "support/catch.hpp"
#include "support/gradcheck.hpp"
#include "support/specs.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_distillation_fit {

using namespace moe;
using Catch::Matchers::Contains;
using moe::testing::random_matrix;

namespace {
const std::vector<TaskSpec> kTasks{binary_task("click"), regression_task("time")};

MultiTaskData<double> toy_data(Index n, std::uint64_t seed) {
    MultiTaskData<double> d;
    d.x = random_matrix(5, n, seed);
    d.labels.resize(2, n);
    for (Index j = 0; j < n; ++j) {
        d.labels(0, j) = d.x(0, j) + 0.5 * d.x(1, j) > 0 ? 1.0 : 0.0;
        d.labels(1, j) = std::abs(d.x(2, j));
    }
    return d;
}

FitOptions quiet(int epochs) {
    FitOptions o;
    o.epochs = epochs;
    o.batch_size = 16;
    o.lr = 1e-2;
    o.seed = 5;
    o.progress = Progress::silent;
    return o;
}

FeatureSpec item_features() {
    FeatureSpec f;
    f.dense = 2;
    f.add_table("items", 30, 3).add_feature("item", "items");
    return f;
}

FeatureData<double> feature_data(Index n, std::uint64_t seed) {
    Rng rng(seed);
    FeatureData<double> d;
    d.features.dense.resize(2, n);
    d.labels.resize(2, n);
    Bags<double>& item = d.features.sparse["item"];
    for (Index j = 0; j < n; ++j) {
        d.features.dense(0, j) = rng.normal(), d.features.dense(1, j) = rng.normal();
        const auto id = std::int64_t(rng.below(30));
        item.ids.push_back(id);
        item.offsets.push_back(std::int64_t(item.ids.size()));
        d.labels(0, j) = (id % 3 == 0) != (d.features.dense(0, j) > 0) ? 1.0 : 0.0;
        d.labels(1, j) = double(id % 5) * 0.3 + 0.1 * d.features.dense(1, j);
    }
    return d;
}

MMoESpec feature_mmoe() {
    MMoESpec s = moe::testing::small_mmoe(kTasks);
    s.input = 0;
    return s;
}

/// Teacher predictions of every sample as a T x N column.
Matrix<double> as_column(const std::vector<Matrix<double>>& preds) {
    Matrix<double> t(Index(preds.size()), preds[0].cols());
    for (std::size_t k = 0; k < preds.size(); ++k) t.row(Index(k)) = preds[k].row(0);
    return t;
}

double mean_gap(const std::vector<Matrix<double>>& a, const std::vector<Matrix<double>>& b) {
    return (a[0] - b[0]).cwiseAbs().mean();
}
}  // namespace

TEST_CASE("fit with distillation: alpha 0 is plain training, bit for bit", "[distillation][training]") {
    MultiTaskData<double> data = toy_data(64, 1);
    Model<MMoE<double>> teacher(moe::testing::small_mmoe(kTasks), 9);
    data.teacher = as_column(predict_all(teacher, data.x));
    Model<MMoE<double>> plain(moe::testing::small_mmoe(kTasks), 2), distilled(moe::testing::small_mmoe(kTasks), 2);
    MultiTaskLoss<double> hard(kTasks);
    DistillationLoss<double> none(kTasks, {{0.0, 2.0}, {0.0, 1.0}});
    fit(plain, hard, data, nullptr, quiet(2));
    fit(distilled, none, data, nullptr, quiet(2));
    CHECK(plain.params().values() == distilled.params().values());

    FeatureData<double> fdata = feature_data(64, 2);
    FeatureModel<MMoE<double>> fteacher(item_features(), feature_mmoe(), 8);
    fdata.teacher = as_column(predict_all(fteacher, fdata.features));
    FeatureModel<MMoE<double>> fplain(item_features(), feature_mmoe(), 3), fdistilled(item_features(), feature_mmoe(), 3);
    fit(fplain, hard, fdata, nullptr, quiet(2));
    fit(fdistilled, none, fdata, nullptr, quiet(2));
    CHECK(fplain.params().values() == fdistilled.params().values());
    CHECK(fplain.input().table(0) == fdistilled.input().table(0));
}

TEST_CASE("fit with distillation: online equals offline on the teacher's predictions; alpha 1 follows the teacher",
          "[distillation][training]") {
    DistillationLoss<double> soft(kTasks, {{1.0, 2.0}, {1.0, 1.0}});
    // Plain models.
    MultiTaskData<double> data = toy_data(96, 3);
    Model<MMoE<double>> teacher(moe::testing::small_mmoe(kTasks), 9);
    const auto teacher_preds = predict_all(teacher, data.x);
    data.teacher = as_column(teacher_preds);
    Model<MMoE<double>> offline(moe::testing::small_mmoe(kTasks), 2), online(moe::testing::small_mmoe(kTasks), 2);
    const double before = mean_gap(predict_all(offline, data.x), teacher_preds);
    fit(offline, soft, data, nullptr, quiet(30));
    MultiTaskData<double> no_column = data;
    no_column.teacher.resize(0, 0);
    fit(online, soft, teacher, no_column, nullptr, quiet(30));
    CHECK((offline.params().values() - online.params().values()).cwiseAbs().maxCoeff() < 1e-9);
    const double after = mean_gap(predict_all(offline, data.x), teacher_preds);
    INFO("student-teacher gap of click " << before << " -> " << after);
    CHECK(after < 0.5 * before);

    // FeatureModel.
    FeatureData<double> fdata = feature_data(96, 4);
    FeatureModel<MMoE<double>> fteacher(item_features(), feature_mmoe(), 8);
    fdata.teacher = as_column(predict_all(fteacher, fdata.features));
    FeatureModel<MMoE<double>> foffline(item_features(), feature_mmoe(), 3), fonline(item_features(), feature_mmoe(), 3);
    fit(foffline, soft, fdata, nullptr, quiet(3));
    FeatureData<double> fno_column = fdata;
    fno_column.teacher.resize(0, 0);
    fit(fonline, soft, fteacher, fno_column, nullptr, quiet(3));
    CHECK((foffline.params().values() - fonline.params().values()).cwiseAbs().maxCoeff() < 1e-9);
    CHECK((foffline.input().table(0) - fonline.input().table(0)).cwiseAbs().maxCoeff() < 1e-9);
}

TEST_CASE("fit with distillation: a missing, bad or mismatched teacher is refused before the first step",
          "[distillation][training][errors]") {
    DistillationLoss<double> loss(kTasks, {{0.5, 2.0}, {0.5, 1.0}});
    MultiTaskData<double> data = toy_data(20, 5);
    Model<MMoE<double>> student(moe::testing::small_mmoe(kTasks), 2);
    const Vector<double> start = student.params().values();
    CHECK_THROWS_WITH(fit(student, loss, data, nullptr, quiet(1)), Contains("needs its teacher predictions") && Contains("holds none"));
    data.teacher = Matrix<double>::Constant(2, 20, 0.5);
    data.teacher(0, 7) = 1.5;
    CHECK_THROWS_WITH(fit(student, loss, data, nullptr, quiet(1)),
                      Contains("teacher prediction of task 'click' at sample 7 is 1.5, expected a probability in [0, 1]"));
    data.teacher(0, 7) = 0.5;
    data.teacher(1, 3) = std::nan("");
    CHECK_THROWS_WITH(fit(student, loss, data, nullptr, quiet(1)), Contains("task 'time' at sample 3 is nan"));
    data.teacher.resize(2, 19);
    CHECK_THROWS_AS(fit(student, loss, data, nullptr, quiet(1)), shape_error);
    Model<MMoE<double>> other(moe::testing::small_mmoe({binary_task("like"), regression_task("time")}), 1);
    CHECK_THROWS_WITH(fit(student, loss, other, data, nullptr, quiet(1)), Contains("the teacher's tasks are [like"));
    CHECK(student.params().values() == start);

    FeatureData<double> fdata = feature_data(20, 6);
    FeatureModel<MMoE<double>> fstudent(item_features(), feature_mmoe(), 3);
    CHECK_THROWS_WITH(fit(fstudent, loss, fdata, nullptr, quiet(1)), Contains("FeatureData(train)") && Contains("holds none"));
    MMoESpec trees = feature_mmoe();
    trees.surfaces = 2;
    FeatureModel<MMoE<double>> fteacher(item_features(), trees, 4);
    CHECK_THROWS_WITH(fit(fstudent, loss, fteacher, fdata, nullptr, quiet(1)), Contains("the teacher has 2 surfaces, the student 1"));
}

}  // namespace test_distillation_fit
