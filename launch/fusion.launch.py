"""ros2 launch egmt_ros fusion.launch.py [thermal_topic:=...] [rgb_topic:=...] [method:=egmt_rt] [model:=PATH]
    [device:=cpu|cuda] [detector_weights:=PATH] [params_file:=PATH] [use_sim_time:=false] [bag:=PATH] [rviz:=false]
    [sigterm_timeout:=15]

Starts fusion_node, entity_node and detection_node with config/egmt.yaml. ``bag:=PATH`` plays a rosbag2 alongside
with the package's player (``bag_play``, rosbag_tools/play.py, with ``--clock``; set ``use_sim_time:=true`` with it)
once the graph is ready: the fusion node subscribed to both camera topics and the detection node to /egmt/fused
(up to 120 s, then it plays anyway), so no frame of the bag is lost to the nodes' start-up.

Fast DDS: sets FASTDDS_DEFAULT_PROFILES_FILE to the installed share/egmt_ros/config/fastdds_large_images.xml (32 MiB
shared-memory segment + UDPv4) for every process it starts, bag player included. With Fast DDS's default 512 KiB
segment, best-effort 640x512 bgr8 images mostly never reach another process. It leaves Fast DDS alone when the user
chose the transports: FASTDDS_DEFAULT_PROFILES_FILE (or the deprecated FASTRTPS_DEFAULT_PROFILES_FILE) or
FASTDDS_BUILTIN_TRANSPORTS already set (Fast DDS ignores FASTDDS_BUILTIN_TRANSPORTS while the profile is in use, and
rmw_fastrtps ignores it under ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, so it is no substitute for the profile).
Camera drivers started elsewhere need the same variable: the publisher's segment is the one that matters.
"""

import os

from ament_index_python.packages import get_package_prefix, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, LogInfo, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")


def fastdds_environment(share: str, environ=os.environ) -> list:
    """Actions that give the launched processes the large-image Fast DDS profile, unless the user set one of
    PROFILE_VARIABLES (then only a note saying so)."""
    user_set = [f"{k}={environ[k]}" for k in PROFILE_VARIABLES if k in environ]
    if user_set:
        return [LogInfo(msg=f"egmt_ros: Fast DDS configured by the user ({', '.join(user_set)}); not applying "
                            "config/fastdds_large_images.xml (best-effort large images need its large "
                            "shared-memory segment in the publishing processes)")]
    profile = os.path.join(share, "config", "fastdds_large_images.xml")
    if not os.path.isfile(profile):
        return [LogInfo(msg=f"egmt_ros: {profile} is not installed; best-effort large images may not arrive")]
    return [SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", profile)]


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
        DeclareLaunchArgument("bag", default_value="",
                              description="rosbag2 to play once the graph is ready (rosbag_tools/play.py)"),
        DeclareLaunchArgument("rviz", default_value="false"),
        # launch's own setting (default 5 s), raised: after SIGINT, detection_node needs 4-6 s on a loaded 2-core CPU
        # to unload torch/ultralytics/OpenVINO, and launch would escalate to SIGTERM, then SIGKILL.
        DeclareLaunchArgument("sigterm_timeout", default_value="15",
                              description="s a process may take to exit after SIGINT before launch sends SIGTERM"),
    ]
    env = fastdds_environment(share)
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
        # The project's player (rosbag_tools/play.py), not `ros2 bag play`: it starts together with the nodes but
        # plays only once the graph is ready (the fusion node subscribed to both cameras, the detection node to
        # /egmt/fused); the nodes need 9-14 s on 2 cores to load their models, and a 40-pair bag was lost whole.
        ExecuteProcess(cmd=[os.path.join(get_package_prefix("egmt_ros"), "lib", "egmt_ros", "bag_play"), arg("bag"),
                            "--clock", "--no-progress", "--wait-for-subscribers", "120",
                            "--wait-for", [arg("thermal_topic"), ":fusion_node"],
                            "--wait-for", [arg("rgb_topic"), ":fusion_node"],
                            "--wait-for", "/egmt/fused:detection_node"], output="screen",
                       condition=IfCondition(PythonExpression(["'", arg("bag"), "' != ''"]))),
        Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", os.path.join(share, "rviz",
                                                                                            "egmt.rviz")],
             condition=IfCondition(arg("rviz"))),
    ]
    return LaunchDescription(args + env + nodes)
