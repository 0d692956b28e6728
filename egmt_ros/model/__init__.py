"""egmt_ros.model"""
