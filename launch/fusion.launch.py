"""ros2 launch egmt_ros fusion.launch.py [thermal_topic:=...] [rgb_topic:=...] [method:=egmt_rt] [model:=PATH]
    [device:=cpu|cuda] [detector_weights:=PATH] [params_file:=PATH] [use_sim_time:=false] [bag:=PATH] [rviz:=false]

Starts fusion_node, entity_node and detection_node with config/egmt.yaml. ``bag:=PATH`` plays a rosbag2 alongside
(``ros2 bag play --clock``; set ``use_sim_time:=true`` with it). Sets FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA unless the
user already set it: with Fast DDS's default transports, large images rarely reach another process.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("egmt_ros")
    arg = LaunchConfiguration
    args = [
        DeclareLaunchArgument("thermal_topic", default_value="/thermal/image_raw"),
        DeclareLaunchArgument("rgb_topic", default_value="/rgb/image_raw"),
        DeclareLaunchArgument("method", default_value="egmt_rt",
                              description="egmt_rt | egmt (with model:=PATH) | average | max | lp | gff"),
        DeclareLaunchArgument("model", default_value="", description="EGMT checkpoint (.pt) for method egmt"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu | cuda"),
        DeclareLaunchArgument("detector_weights", default_value="",
                              description="YOLO weights (.pt/.onnx/.engine/OpenVINO dir); empty = search path"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "egmt.yaml")),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        DeclareLaunchArgument("bag", default_value="", description="rosbag2 to play alongside (ros2 bag play)"),
        DeclareLaunchArgument("rviz", default_value="false"),
    ]
    env = []
    if "FASTDDS_BUILTIN_TRANSPORTS" not in os.environ:
        env.append(SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA"))
    common = [arg("params_file"), {"use_sim_time": PythonExpression(["'", arg("use_sim_time"), "' == 'true'"])}]
    nodes = [
        Node(package="egmt_ros", executable="fusion_node", name="fusion_node", output="screen",
             parameters=common + [{"model.method": arg("method"), "model.path": arg("model"),
                                   "model.device": arg("device")}],
             remappings=[("/thermal/image_raw", arg("thermal_topic")), ("/rgb/image_raw", arg("rgb_topic"))]),
        Node(package="egmt_ros", executable="entity_node", name="entity_node", output="screen",
             parameters=common + [{"device": arg("device")}],
             remappings=[("/thermal/image_raw", arg("thermal_topic")), ("/rgb/image_raw", arg("rgb_topic"))]),
        Node(package="egmt_ros", executable="detection_node", name="detection_node", output="screen",
             parameters=common + [{"weights": arg("detector_weights"), "device": arg("device")}]),
        ExecuteProcess(cmd=["ros2", "bag", "play", arg("bag"), "--clock"], output="screen",
                       condition=IfCondition(PythonExpression(["'", arg("bag"), "' != ''"]))),
        Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", os.path.join(share, "rviz",
                                                                                            "egmt.rviz")],
             condition=IfCondition(arg("rviz"))),
    ]
    return LaunchDescription(args + env + nodes)
